"""Where model work runs: one worker thread, off the event loop, behind a bounded admission queue.

Every forward pass goes through `Runner.call`, so the model is only ever used from one thread, and
generations advance one token per call: concurrent streams interleave step by step (first come, first
served) instead of waiting for each other to finish. Requests first pass `admit()`/`reserve()`, which lets
at most `max_queue` in at once (running or waiting) and turns the rest away with 429; an admitted request
then `claim`s the KV-cache tokens it will hold before it allocates them: more than `max_batch_tokens`
alone is a 400, more than what is free right now a 429.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from decodelab.server.errors import APIError

T = TypeVar("T")
_DONE = object()
RETRY_AFTER_SECONDS = 1  # what a 429 suggests: requests finish, or free their slot, within about that


@dataclass
class Stats:
    """Counters a teacher (or a test) can read at GET /api/stats."""

    active: int = 0  # requests admitted and not yet finished
    admitted: int = 0
    rejected: int = 0  # turned away with 429
    completed: int = 0  # generations that ran to a stop reason
    cancelled: int = 0  # generations ended early: the client went away (or the request failed midway)
    tokens: int = 0  # tokens generated, all requests
    kv_tokens: int = 0  # KV-cache tokens claimed by admitted requests right now

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def busy(message: str, code: str, retry_after: int = RETRY_AFTER_SECONDS) -> APIError:
    return APIError(429, message, type="rate_limit_error", code=code, headers={"Retry-After": str(retry_after)})


class Ticket:
    """One admitted request: its queue slot and the KV-cache tokens it claimed; `release()` returns both."""

    def __init__(self, runner: Runner):
        self._runner, self.tokens, self.held = runner, 0, True

    def claim(self, tokens: int, cost: str) -> None:
        """Reserve `tokens` of KV cache (`cost` says how they add up, e.g. 'n=4 x (12 + 64)')."""
        runner, stats = self._runner, self._runner.stats
        if tokens > runner.max_batch_tokens:
            raise APIError(
                400,
                f"this request needs {tokens} KV-cache tokens ({cost}) and this server allows "
                f"{runner.max_batch_tokens} per request (decodelab serve --max-batch-tokens): ask "
                "for fewer new tokens, rows or beams, or a shorter prompt",
                code="request_too_large",
            )
        if stats.kv_tokens + tokens > runner.max_batch_tokens:
            stats.rejected += 1
            raise busy(
                f"the server is busy: running requests hold {stats.kv_tokens} of its "
                f"{runner.max_batch_tokens} KV-cache tokens and this one needs {tokens}; retry in a moment",
                "kv_budget_full",
            )
        stats.kv_tokens += tokens
        self.tokens += tokens

    def release(self) -> None:
        """Give back the slot and the tokens (calling it twice is harmless)."""
        if self.held:
            self.held = False
            self._runner.stats.active -= 1
            self._runner.stats.kv_tokens -= self.tokens
            self.tokens = 0


class Runner:
    def __init__(self, max_queue: int = 8, max_batch_tokens: int = 65_536):
        if max_queue < 1 or max_batch_tokens < 1:
            raise ValueError(f"max_queue and max_batch_tokens must be >= 1, got {max_queue}, {max_batch_tokens}")
        self.max_queue = max_queue
        self.max_batch_tokens = max_batch_tokens
        self.stats = Stats()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="decodelab-model")

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` on the model thread and wait for it without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[Ticket]:
        """A request's ticket for the duration of a block; 429 when `max_queue` are already admitted."""
        ticket = self.reserve()
        try:
            yield ticket
        finally:
            ticket.release()

    def reserve(self) -> Ticket:
        """A request's ticket, held until `ticket.release()`; 429 when `max_queue` requests are admitted."""
        if self.stats.active >= self.max_queue:
            self.stats.rejected += 1
            raise busy(
                f"the server is busy: {self.stats.active} requests are running or queued (limit "
                f"{self.max_queue}, decodelab serve --max-queue); retry in a moment",
                "queue_full",
            )
        self.stats.active += 1
        self.stats.admitted += 1
        return Ticket(self)

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
                    yield cast(T, first)
                    yield from steps
            finally:
                close = getattr(steps, "close", None)
                if close is not None:
                    close()

        return rest()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
