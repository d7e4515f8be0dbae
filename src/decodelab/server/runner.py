"""Where model work runs: one worker thread, off the event loop, behind a bounded admission queue.

Every forward pass goes through `Runner.call`, so the model is only ever used from one thread, and
generations advance one token per call: concurrent streams interleave step by step (first come, first
served) instead of waiting for each other to finish. Generations first pass `admit()`, which lets at most
`max_queue` of them in at once (running or waiting) and turns the rest away with 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from decodelab.server.errors import APIError

T = TypeVar("T")
_DONE = object()


@dataclass
class Stats:
    """Counters a teacher (or a test) can read at GET /api/stats."""

    active: int = 0  # generations admitted and not yet finished
    admitted: int = 0
    rejected: int = 0  # turned away with 429
    completed: int = 0  # ran to a stop reason
    cancelled: int = 0  # ended early: the client went away (or the request failed midway)
    tokens: int = 0  # tokens generated, all requests

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Runner:
    def __init__(self, max_queue: int = 8):
        if max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {max_queue}")
        self.max_queue = max_queue
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decodelab-model")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the model thread and wait for it without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[None]:
        """A generation's slot for the duration of a block; 429 when `max_queue` are already admitted."""
        release = self.reserve()
        try:
            yield
        finally:
            release()

    def reserve(self) -> Callable[[], None]:
        """A generation's slot, held until the returned `release()` is called (calling it twice is harmless);
        429 when `max_queue` generations are already admitted."""
        if self.stats.active >= self.max_queue:
            self.stats.rejected += 1
            raise APIError(
                429,
                f"the server is busy: {self.stats.active} generations are running or queued (limit "
                f"{self.max_queue}); retry in a moment",
                type="rate_limit_error",
                code="queue_full",
            )
        self.stats.active += 1
        self.stats.admitted += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.stats.active -= 1

        return release

    async def iterate(self, steps: Iterator[T]) -> AsyncIterator[T]:
        """Items of a blocking iterator (a Generation: one forward per item), each computed on the model
        thread. Counts the run as completed when it is exhausted and as cancelled when the consumer stops
        early (a client that went away); either way the iterator is closed, freeing its KV cache."""
        finished = False
        try:
            while (item := await self.call(next, steps, _DONE)) is not _DONE:
                self.stats.tokens += 1
                yield item
            finished = True
        finally:
            if finished:
                self.stats.completed += 1
            else:
                self.stats.cancelled += 1
            close = getattr(steps, "close", None)
            if close is not None:  # queued behind the step in flight; not awaited (we may be cancelled)
                with contextlib.suppress(RuntimeError):  # the server is shutting down: nothing left to free
                    self._executor.submit(close)

    @staticmethod
    def primed(steps: Iterator[T]) -> Iterator[T]:
        """`steps` with its first item computed now (call it on the model thread): a generation's errors —
        a bad bias id, a prompt the template rejects — then surface before a stream has answered 200."""
        first = next(steps, _DONE)

        def rest() -> Iterator[T]:
            try:
                if first is not _DONE:
                    yield first
                    yield from steps
            finally:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()

        return rest()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
