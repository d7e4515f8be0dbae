"""The routes' side of the model thread: admission, KV budget, and the two ways work reaches the model.

    runner.call(function)   run it alone on the model thread, between batched steps (tokenizing, beam search)
    runner.start(loop)      a request's generation loop as a task of the batching scheduler (see `scheduler`);
                            returns once its first outputs exist, so its errors are still a 4xx, not a broken
                            stream; iterate the returned `TaskStream` for the rest

Requests first pass `reserve()`/`admit()`: at most `max_batch + max_queue` at once (running or waiting), 429
with Retry-After beyond. An admitted request then `claim`s the KV-cache tokens it will hold before it allocates
them: more than `max_batch_tokens` alone is a 400, more than what is free now a 429. Its ticket ends once, as
completed, failed or cancelled (see `stats`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

from decodelab.server.errors import APIError
from decodelab.server.scheduler import Scheduler, Task
from decodelab.server.stats import Stats

T = TypeVar("T")
RETRY_AFTER_SECONDS = 1  # what a 429 suggests: requests finish, or free their slot, within about that


def busy(message: str, code: str, retry_after: int = RETRY_AFTER_SECONDS) -> APIError:
    return APIError(429, message, type="rate_limit_error", code=code, headers={"Retry-After": str(retry_after)})


class Ticket:
    """One admitted request: its place and the KV-cache tokens it claimed; `end()` gives both back, once."""

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

    def end(self, outcome: str) -> None:
        """The request is over: "completed", "failed" or "cancelled" (only the first call counts)."""
        if self.held:
            self.held = False
            self._runner.stats.end(outcome)
            self._runner.stats.kv_tokens -= self.tokens
            self.tokens = 0

    def release(self) -> None:
        """End it as cancelled unless it already ended (a stream's last word: its client went away)."""
        self.end("cancelled")

    def closer(self, *streams: TaskStream) -> Callable[[], None]:
        """What a streamed response calls once it is over, however it ended (a client may leave before its
        first frame, when the frames never started): cancel what is left of its tasks, end the ticket."""

        def close() -> None:
            for stream in streams:
                stream.close()
            self.release()

        return close

    def end_for(self, error: BaseException) -> None:
        """End it for `error`: cancelled when the route was cancelled (its client left), else failed."""
        self.end("cancelled" if isinstance(error, asyncio.CancelledError) else "failed")


class TaskStream:
    """A task's outputs on the event loop. Closing it before the end (a client that left) cancels the task."""

    def __init__(self, scheduler: Scheduler, rows: int, loop: Iterator[Any], cancellable: bool):
        self._scheduler = scheduler
        self._inbox: asyncio.Queue = asyncio.Queue()
        self._buffer: deque[Any] = deque()
        self.finished = False
        event_loop = asyncio.get_running_loop()

        def deliver(outputs: list[Any] | BaseException | None) -> None:  # on the model thread
            event_loop.call_soon_threadsafe(self._inbox.put_nowait, outputs)

        self._task = Task(loop, rows, deliver, cancellable)
        scheduler.submit(self._task)

    async def _fill(self) -> bool:
        """Wait for the next outputs; False once the task has ended."""
        outputs = await self._inbox.get()
        if isinstance(outputs, list):
            self._buffer.extend(outputs)
            return True
        self.finished = True
        if outputs is not None:
            raise outputs
        return False

    async def prime(self) -> None:
        """Wait for the first outputs (or the end): errors before them are raised here."""
        if not self._buffer and not self.finished:
            await self._fill()

    def __aiter__(self) -> TaskStream:
        return self

    async def __anext__(self) -> Any:
        while not self._buffer:
            if self.finished or not await self._fill():
                raise StopAsyncIteration
        return self._buffer.popleft()

    async def aclose(self) -> None:
        self.close()

    def close(self) -> None:
        if not self.finished:
            self.finished = True
            self._scheduler.cancel(self._task)


async def merged(streams: list[TaskStream]) -> AsyncGenerator[tuple[int, Any], None]:
    """(i, output) from several task streams as their outputs arrive; i is the stream's place in `streams`."""
    waiting = {asyncio.ensure_future(anext(stream)): i for i, stream in enumerate(streams)}
    try:
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for future in sorted(done, key=waiting.__getitem__):  # the same order on every run
                i = waiting.pop(future)
                try:
                    output = future.result()
                except StopAsyncIteration:
                    continue
                waiting[asyncio.ensure_future(anext(streams[i]))] = i
                yield i, output
    finally:
        for future in waiting:
            future.cancel()


class Runner:
    def __init__(
        self, max_queue: int = 32, max_batch_tokens: int = 65_536, max_batch: int = 16, prefill_chunk: int = 128
    ):
        if min(max_queue, max_batch_tokens, max_batch) < 1:
            raise ValueError(
                f"max_queue, max_batch_tokens and max_batch must be >= 1, got {max_queue}, {max_batch_tokens}, "
                f"{max_batch}"
            )
        self.max_queue, self.max_batch_tokens, self.max_batch = max_queue, max_batch_tokens, max_batch
        self.stats = Stats()
        self._scheduler = Scheduler(self.stats, max_batch, prefill_chunk)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run `function(*args)` alone on the model thread and wait for it without blocking the event loop."""
        return await asyncio.wrap_future(self.call_soon(lambda: function(*args)))

    def call_soon(self, function: Callable[[], T]) -> Future[T]:
        """Queue `function()` to run alone on the model thread, between two ticks; from any thread (the model
        thread included: a call queued there runs after the next tick). Its result comes in the Future."""
        return self._scheduler.call(function)

    async def start(self, loop: Iterator[Any], rows: int = 1, cancellable: bool = True) -> TaskStream:
        """Run `loop` (outputs and `decodelab.work` items) as a task of `rows` batch rows; returns when its first
        outputs exist. Close the stream (or run it to its end) in every case."""
        stream = TaskStream(self._scheduler, rows, loop, cancellable)
        try:
            await stream.prime()
        except BaseException:
            stream.close()
            raise
        return stream

    async def result(self, loop: Iterator[Any]) -> Any:
        """The last output of a one-row task that must not be cut short (a session's step)."""
        stream = await self.start(loop, cancellable=False)
        outputs = [output async for output in stream]
        return outputs[-1]

    @contextlib.asynccontextmanager
    async def admit(self) -> AsyncIterator[Ticket]:
        """A request's ticket for the duration of a block, ended as it ends; 429 when the server is full."""
        ticket = self.reserve()
        try:
            yield ticket
        except BaseException as error:
            ticket.end_for(error)
            raise
        ticket.end("completed")

    def reserve(self) -> Ticket:
        """A request's ticket, held until `ticket.end()`; 429 when `max_batch + max_queue` requests are admitted."""
        limit = self.max_batch + self.max_queue
        if self.stats.active >= limit:
            self.stats.rejected += 1
            raise busy(
                f"the server is busy: {self.stats.active} requests are running or queued (limit {limit}: "
                f"decodelab serve --max-batch {self.max_batch} + --max-queue {self.max_queue}); retry in a moment",
                "queue_full",
            )
        self.stats.active += 1
        self.stats.admitted += 1
        return Ticket(self)

    def stats_dict(self) -> dict:
        return self.stats.to_dict(self.max_batch)

    def shutdown(self) -> None:
        self._scheduler.stop()
