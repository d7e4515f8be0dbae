"""The JSONL file results go to: one whole line per result, appended as each finishes, so a rerun resumes.

A line is written with one `write` call on a file opened for appending, then flushed to disk (`fsync`): a
crash or a kill leaves whole lines, and at most a part of the last one, never a line cut in the middle of the
file. Opening the file again drops such a partial last line and reads the keys of the results already there
(their "id"), which the run then skips. Each result line carries the model's fields (`stamp`); resuming a file
another model (or mode) wrote is refused, so one file never mixes two models' numbers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from decodelab.batch.inputs import Key
from decodelab.errors import BadInput


class ResultsFile:
    """`path` opened for appending result lines; `done` holds the keys it already has."""

    def __init__(self, path: str | Path, stamp: dict):
        self.path = Path(path)
        self.stamp = stamp
        self.dropped_partial_line = False  # whether opening cut off what a crash left of a last line
        self.done: set[Key] = self._resume()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict) -> None:
        """`record` as one JSON line, written whole and flushed to disk."""
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: what was written is a partial last line, dropped on resume
            raise OSError(f"wrote {written} of {len(line)} bytes of a result line to {self.path}")
        os.fsync(self._fd)
        self.done.add(record["id"])

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _resume(self) -> set[Key]:
        """The keys of the whole result lines already in the file (none when there is no file), after cutting
        off a partial last line."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return set()
        except OSError as error:
            raise BadInput(f"cannot read the output file {str(self.path)!r}: {error.strerror or error}") from None
        whole = data[: data.rfind(b"\n") + 1]  # a crash can only have cut the last line short
        if len(whole) < len(data):
            os.truncate(self.path, len(whole))
            self.dropped_partial_line = True
        keys: set[Key] = set()
        for number, line in enumerate(whole.decode("utf-8", errors="replace").splitlines(), start=1):
            record = self._record(number, line)
            if "error" not in record:
                self._check_stamp(number, record)
            keys.add(record["id"])
        return keys

    def _record(self, number: int, line: str) -> dict:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("id"), (str, int)):
            raise BadInput(
                f"{self.path}, line {number} is not a result line ({line[:60]!r}): give a new output file, or one "
                "an earlier run of the same command wrote"
            )
        return record

    def _check_stamp(self, number: int, record: dict) -> None:
        for name, value in self.stamp.items():
            if record.get(name) != value:
                raise BadInput(
                    f"{self.path}, line {number} holds a result of {name} {_short(record.get(name))}, and this run's "
                    f"is {_short(value)}: give another output file, or delete this one to start over"
                )


def _short(value: object) -> str:
    if isinstance(value, dict) and "label" in value:
        return repr(value["label"])  # a ComputeMode's dict: its label names it
    return repr(value)
