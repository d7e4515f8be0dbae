"""One piece of work per input item on N worker threads, each result appended to a `ResultsFile` as it finishes
(so the file is in completion order), with a progress bar.

    run_jsonl(items, "out.jsonl", work, stamp={"model": ...}, concurrency=8) -> BatchSummary

A result line is {"id": key, **stamp, **work(item)}. An item whose work raises a `DecodelabError` of its own (a
text too short to score, the server's 400 for that prompt) is recorded as {"id": key, "error": "..."} and the run
goes on; a rerun counts that line as done (delete it to try the item again). A failure that is not the item's
stops the run: the server unreachable, or still overloaded, after the client's retries; a server without what
the work needs; a bug. The workers then take no new item, those already running finish and are written, and
`BatchStopped` says how many results the file holds and that rerunning the same command resumes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from decodelab.batch.inputs import Item
from decodelab.batch.progress import ProgressBar
from decodelab.batch.results_file import ResultsFile
from decodelab.errors import BadInput, DecodelabError, Unsupported
from decodelab.remote.client import RemoteError

Work = Callable[[Item], dict]
UNAVAILABLE_STATUSES = frozenset({429, 502, 503, 504})  # still answered after the client's retries: stop the run


class BatchStopped(DecodelabError):
    """A failure that is not one item's stopped the run; what was done is kept, and a rerun resumes."""


@dataclass(frozen=True)
class BatchSummary:
    total: int  # items in the input file
    skipped: int  # items whose results an earlier run had written
    written: int  # result lines this run wrote, errors included
    errors: int  # of those, items whose work failed
    workers: int  # threads the work ran on
    seconds: float
    out: Path
    dropped_partial_line: bool  # whether a partial last line (a crash's) was cut off the output first

    def describe(self) -> str:
        """'wrote 52 results (1 error: ...) to out.jsonl in 8.1 s; 12 of 64 were there already'."""
        if not self.written and self.skipped == self.total:
            return f"nothing to do: all {self.total} results are in {self.out} already"
        errors = f' ({self.errors} error{"s" * (self.errors != 1)}: lines with "error")' if self.errors else ""
        parts = [
            f"wrote {self.written} result{'s' * (self.written != 1)}{errors} to {self.out} in {self.seconds:.1f} s"
        ]
        if self.skipped:
            parts.append(f"{self.skipped} of {self.total} were there already")
        if self.dropped_partial_line:
            parts.append("a partial last line an interrupted run left was dropped")
        return "; ".join(parts)


def run_jsonl(
    items: list[Item],
    out: str | Path,
    work: Work,
    *,
    stamp: dict,
    concurrency: int = 1,
    quiet: bool = False,
) -> BatchSummary:
    """`work` on each item not yet in `out`, `concurrency` at a time (see the module docstring)."""
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise BadInput(f"concurrency must be a whole number of at least 1, got {concurrency!r}")
    started = time.monotonic()
    with ResultsFile(out, stamp) as results:
        todo = [item for item in items if item.key not in results.done]
        bar = ProgressBar(len(items), len(items) - len(todo), quiet=quiet)
        bar.draw()
        workers = Workers(work, todo, max(1, min(concurrency, len(todo))))
        stopped_by: BaseException | None = None
        written = errors = 0
        try:
            for item, outcome in workers.results():
                if isinstance(outcome, BaseException) and stops_the_run(outcome):
                    stopped_by = stopped_by or outcome
                    workers.stop()
                    continue
                if isinstance(outcome, BaseException):
                    record, errors = {"id": item.key, "error": str(outcome)}, errors + 1
                else:
                    record = {"id": item.key, **stamp, **outcome}
                results.append(record)
                written += 1
                bar.advance()
        finally:
            workers.stop()
            bar.finish()
        if stopped_by is not None:
            if not isinstance(stopped_by, DecodelabError):
                raise stopped_by  # a bug: its own traceback
            raise BatchStopped(
                f"stopped: {stopped_by} ({len(results.done)} of {len(items)} results are in {out}; rerun the same "
                "command to do the rest)"
            ) from None
        return BatchSummary(
            total=len(items),
            skipped=len(items) - len(todo),
            written=written,
            errors=errors,
            workers=len(workers.threads),
            seconds=time.monotonic() - started,
            out=Path(out),
            dropped_partial_line=results.dropped_partial_line,
        )


def stops_the_run(error: BaseException) -> bool:
    """Whether `error` is not the item's own: every later item would fail the same way (module docstring)."""
    if not isinstance(error, DecodelabError):
        return True  # a bug, or an interruption
    if isinstance(error, Unsupported):
        return True  # the model or server lacks what the work needs
    if isinstance(error, RemoteError):
        return not error.reachable or error.status in UNAVAILABLE_STATUSES
    return False


class Workers:
    """`work` over `items` on `count` daemon threads (an interrupted run exits at once); `results()` yields
    (item, result or the exception it raised) in completion order; `stop()` lets each thread finish its item and
    take no other."""

    def __init__(self, work: Work, items: list[Item], count: int):
        self._todo: queue.SimpleQueue[Item] = queue.SimpleQueue()
        for item in items:
            self._todo.put(item)
        self._done: queue.SimpleQueue[tuple[Item, dict | BaseException] | None] = queue.SimpleQueue()
        self._stopped = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(work,), name=f"decodelab-batch-{n}", daemon=True)
            for n in range(count)
        ]

    def results(self) -> Iterator[tuple[Item, dict | BaseException]]:
        for thread in self.threads:
            thread.start()
        running = len(self.threads)
        while running:
            entry = self._done.get()
            if entry is None:  # a thread found nothing more to do
                running -= 1
            else:
                yield entry

    def stop(self) -> None:
        self._stopped.set()

    def _run(self, work: Work) -> None:
        try:
            while not self._stopped.is_set():
                try:
                    item = self._todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    outcome: dict | BaseException = work(item)
                except Exception as error:
                    outcome = error
                self._done.put((item, outcome))
        finally:
            self._done.put(None)
