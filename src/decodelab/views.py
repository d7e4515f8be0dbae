"""Notebook views of records, dispatched on the record's type: `html(record)` behind every `_repr_html_`, and
`frame(record)` behind every `to_pandas()`.

Records (`Result`, `Score`, `BeamResult`, ...) declare the two methods and call these functions; the
presentation modules register what each record looks like — `decodelab.display` its HTML, `decodelab.tables`
its DataFrame. This module imports neither side, so a record module never imports presentation code, and the
presentation modules import the records they draw. `decodelab.model` imports both, so every record an `LM`
hands out can show itself.
"""

from __future__ import annotations

from functools import singledispatch
from typing import TYPE_CHECKING, Any

from decodelab.errors import Unsupported

if TYPE_CHECKING:
    import pandas


@singledispatch
def html(record: object) -> str:
    """Self-contained HTML for Jupyter (see `decodelab.display`)."""
    raise Unsupported(f"no HTML view of a {type(record).__name__} is registered: import decodelab.display first")


@singledispatch
def frame(record: object, **options: Any) -> pandas.DataFrame:
    """A pandas DataFrame of the record (see `decodelab.tables`)."""
    raise Unsupported(f"no table of a {type(record).__name__} is registered: import decodelab.tables first")
