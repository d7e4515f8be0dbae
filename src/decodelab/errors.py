"""The exceptions a user can cause, and how they read.

Every problem a user can fix (a bad path, a bad parameter, an empty prompt, no network for a hub id)
is raised as a `DecodelabError` whose message is one line naming what was wrong and what to do.
The CLI prints that line and exits non-zero; the Python API lets it propagate.

The server tells a request's own mistakes (`BadInput`, `Unsupported`: 400; `ModelNotFound`: 404) from
everything else, which it treats as its own fault: a 500 with a generic message and a log line.
"""


class DecodelabError(Exception):
    """A problem the user can fix; `str(error)` is one line that says what and how."""


class ModelNotFound(DecodelabError):
    """The named model is neither bundled, cached, a local path, nor reachable on the hub."""


class BadInput(DecodelabError):
    """An argument or text the user gave cannot be used (empty prompt, `top=0`, ...)."""


class Unsupported(DecodelabError):
    """The loaded model or backend cannot do what was asked (no chat template, a cache that cannot reorder)."""
