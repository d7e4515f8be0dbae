"""A JSONL file of inputs, read and checked whole before any work starts: one `Item` per non-blank line.

Each line is a JSON object holding the command's required field (a non-empty string), any of its optional
ones, and optionally an "id" (a string or a whole number). An item's key, what its result line carries as "id"
and what a rerun resumes by, is its id, else its line number (1-based). Every mistake is one error naming the
line: a line that is not JSON, not an object, lacks the field, holds a field the command does not read (a typo
would otherwise change the result silently), or repeats another line's key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from decodelab.errors import BadInput

Key = str | int  # an item's id, or its line number


@dataclass(frozen=True)
class Item:
    key: Key  # the line's "id", else its line number
    line: int  # 1-based line number in the input file
    fields: dict[str, str]  # the fields the command reads, "id" left out


def read_items(path: str | Path, required: str, optional: tuple[str, ...] = ()) -> list[Item]:
    """Every item of the JSONL file at `path`; lines must hold `required`, may hold `optional` and "id"."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInput(f"no such input file: {str(path)!r}; give the path of a JSONL file") from None
    except UnicodeDecodeError:
        raise BadInput(f"input file {str(path)!r} is not UTF-8 text; save it as UTF-8") from None
    except OSError as error:
        raise BadInput(f"cannot read input file {str(path)!r}: {error.strerror or error}") from None
    items: list[Item] = []
    lines_by_key: dict[Key, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _item(path, number, line, required, optional)
        if item.key in lines_by_key:
            raise BadInput(
                f"{path}, line {number}: its id {item.key!r} is also line {lines_by_key[item.key]}'s "
                "(a line without an id has its line number as id): give every line a distinct id"
            )
        lines_by_key[item.key] = number
        items.append(item)
    if not items:
        raise BadInput(f"input file {str(path)!r} holds no lines: write one JSON object per line")
    return items


def _item(path: str | Path, number: int, line: str, required: str, optional: tuple[str, ...]) -> Item:
    where = f"{path}, line {number}"
    shape = f'a line is a JSON object such as {{"id": 1, "{required}": "..."}}'
    try:
        value = json.loads(line)
    except ValueError as error:
        raise BadInput(f"{where} is not JSON ({error}): {shape}") from None
    if not isinstance(value, dict):
        raise BadInput(f"{where} is {line.strip()[:60]!r}, not a JSON object: {shape}")
    allowed = (required, *optional, "id")
    unknown = [name for name in value if name not in allowed]
    if unknown:
        raise BadInput(f"{where} has the field {unknown[0]!r}, which is not read: a line holds {_listed(allowed)}")
    if required not in value:
        raise BadInput(f"{where} has no {required!r} field: {shape}")
    for name in (required, *optional):
        if name in value and (not isinstance(value[name], str) or not value[name]):
            raise BadInput(f"{where}: {name!r} must be a non-empty string, got {value[name]!r}")
    key = value.get("id", number)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        raise BadInput(f"{where}: 'id' must be a string or a whole number, got {key!r}")
    return Item(key, number, {name: value[name] for name in (required, *optional) if name in value})


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(repr(name) for name in names[:-1]) + f" and {names[-1]!r}"
