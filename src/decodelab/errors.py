"""The one exception type a user can cause, and how it reads.

Every problem a user can fix (a bad path, a bad parameter, an empty prompt, no network for a hub id)
is raised as a `DecodelabError` whose message is one line naming what was wrong and what to do.
The CLI prints that line and exits non-zero; the Python API lets it propagate.
"""


class DecodelabError(Exception):
    """A problem the user can fix; `str(error)` is one line that says what and how."""


class ModelNotFound(DecodelabError):
    """The named model is neither bundled, cached, a local path, nor reachable on the hub."""


class BadInput(DecodelabError):
    """An argument or text the user gave cannot be used (empty prompt, `top=0`, ...)."""
