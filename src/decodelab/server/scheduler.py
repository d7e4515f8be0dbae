"""The model thread: one loop that owns the model and serves every running request in one batched step per tick.

    each tick:
      1. calls that came in run, each alone and in order (tokenizing, beam search, a session's undo ...)
      2. waiting tasks start while the batch has room (`max_batch` rows; a task alone always starts)
      3. each running task runs until it needs the model: a Forward (one token for its rows) or a PrefillChunk
         (part of its prompt); the Steps it made on the way go to its consumer at once
      4. prefill chunks run, oldest first, up to `prefill_tokens` prompt tokens in all (at least one chunk): a
         long prompt delays the others by one chunk a tick, and several short ones start in one tick. Prompts
         being scored (echo with logprobs) that start together are prefilled as one padded forward
         (`decodelab.work.run_prefills_together`): their logprobs equal their own prefill's within ~1e-4 (float32
         matmuls summed in another order); a generation's prompt is prefilled alone, as the local engine does
      5. every Forward runs as one batched decode step (`decodelab.work.run_together`)

A task is a request's loop as a generator of its outputs and its `decodelab.work` items (a `Generation`'s
`work()`, a session step): the loop is the library's own, only its model work is batched. Each group of rows
keeps its own KV cache, its positions, its sampler chain and seeds, so a request gets the tokens it gets alone.
A cancelled task is closed at the next tick, freeing its rows and its cache; one that fails ends alone.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any

from decodelab.records import Step
from decodelab.server.stats import Stats
from decodelab.work import Forward, PrefillChunk, Work, run_prefills_together, run_together

# What a task hands its consumer: a list of outputs, or at the end None (finished) or the exception it raised.
Deliver = Callable[[list[Any] | BaseException | None], None]


class Task:
    """A request's loop on the model thread, its `rows` in the batch, and where its outputs go."""

    def __init__(self, loop: Iterator[Any], rows: int, deliver: Deliver, cancellable: bool = True):
        self.loop, self.rows, self.deliver, self.cancellable = loop, rows, deliver, cancellable
        self.cancelled = False  # set from the event loop: the consumer is gone
        self.pending: Work | None = None  # the model work it waits for
        self.started = time.perf_counter()
        self.last_output: float | None = None


class Scheduler:
    def __init__(self, stats: Stats, max_batch: int, prefill_tokens: int):
        self.stats, self.max_batch, self.prefill_tokens = stats, max_batch, prefill_tokens
        self._inbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._calls: deque[tuple[Future, Callable[[], Any]]] = deque()
        self._waiting: deque[Task] = deque()
        self._running: list[Task] = []
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="decodelab-model", daemon=True)
        self._thread.start()

    # --- from the event loop ------------------------------------------------------------------------------------

    def call(self, function: Callable[[], Any]) -> Future:
        """Run `function()` alone on the model thread, between ticks; its result (or exception) in the Future."""
        future: Future = Future()
        if self._stopped:
            future.set_exception(RuntimeError("the server is shutting down"))
        else:
            self._inbox.put(("call", (future, function)))
        return future

    def submit(self, task: Task) -> None:
        if self._stopped:
            task.deliver(RuntimeError("the server is shutting down"))
        else:
            self._inbox.put(("task", task))

    def cancel(self, task: Task) -> None:
        """Close `task` at the next tick (a task that is not cancellable, a session's step, runs to its end)."""
        task.cancelled = True
        self._inbox.put(("wake", None))

    def stop(self) -> None:
        self._stopped = True
        self._inbox.put(("wake", None))

    # --- on the model thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopped:
            self._receive(block=not (self._running or self._waiting or self._calls))
            self._run_calls()  # (in a method: a local here would keep the last call's result alive while idle)
            self._start_waiting()
            self._tick()
        self._fail_all(RuntimeError("the server is shutting down"))

    def _receive(self, block: bool) -> None:
        messages = [self._inbox.get()] if block else []
        while True:
            try:
                messages.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        for kind, payload in messages:
            if kind == "call":
                self._calls.append(payload)
            elif kind == "task":
                self._waiting.append(payload)
        self.stats.waiting = len(self._waiting) + len(self._calls)

    def _run_calls(self) -> None:
        while self._calls and not self._stopped:
            future, function = self._calls.popleft()
            if not future.set_running_or_notify_cancel():
                continue  # its route was cancelled meanwhile
            try:
                future.set_result(function())
            except BaseException as error:  # handed to the awaiting route, which answers for it
                future.set_exception(error)

    def _start_waiting(self) -> None:
        rows = sum(task.rows for task in self._running)
        while self._waiting and (rows + self._waiting[0].rows <= self.max_batch or not self._running):
            task = self._waiting.popleft()
            self._running.append(task)
            rows += task.rows
        self.stats.running_rows = rows
        self.stats.waiting = len(self._waiting) + len(self._calls)

    def _tick(self) -> None:
        for task in list(self._running):
            if task.cancelled and task.cancellable:
                close = getattr(task.loop, "close", None)
                if close is not None:
                    close()  # a generator: its `finally` blocks run now
                self._end(task, None)
            elif task.pending is None:
                self._advance(task)
        prefilling = [task for task in self._running if isinstance(task.pending, PrefillChunk)]
        budget = self.prefill_tokens
        together = self._scored_together(prefilling)  # two or more, or none
        if together:
            chunks = [task.pending for task in together if isinstance(task.pending, PrefillChunk)]
            budget -= len(chunks) * max(chunk.ids.shape[1] for chunk in chunks)  # padded to the longest
            self._run_work(together, lambda: run_prefills_together(chunks))
            self.stats.batched_prefills += len(chunks)
        for task in [task for task in prefilling if task not in together]:
            chunk = task.pending
            assert isinstance(chunk, PrefillChunk)
            if chunk.ids.shape[1] > budget and budget < self.prefill_tokens:
                break  # the tick's prompt tokens are spent: the rest wait for the next one
            budget -= chunk.ids.shape[1]
            self._run_work([task], chunk.run)
        forwards = [task for task in self._running if isinstance(task.pending, Forward)]
        if forwards:
            batch = [task.pending for task in forwards if isinstance(task.pending, Forward)]
            self._run_work(forwards, lambda: run_together(batch))
            self.stats.steps += 1
            self.stats.stepped_rows += sum(task.rows for task in forwards)

    def _scored_together(self, prefilling: list[Task]) -> list[Task]:
        """The oldest scored prompts' first chunks (`keep_all`, `starts_alone`: an echo's or a scoring task's) whose
        padded batch fits the tick's prefill budget: run as one forward, they share the read of the weights. Other
        prefills (a generation's prompt) run alone, so their tokens stay bit for bit the local engine's."""
        group: list[Task] = []
        longest, backend = 0, None
        for task in prefilling:
            chunk = task.pending
            if not (isinstance(chunk, PrefillChunk) and chunk.keep_all and chunk.starts_alone):
                continue
            if backend is not None and chunk.backend is not backend:
                continue
            length = max(longest, chunk.ids.shape[1])
            if group and (len(group) + 1) * length > self.prefill_tokens:
                break
            group.append(task)
            longest, backend = length, chunk.backend
        return group if len(group) > 1 else []  # one alone runs as any prefill

    def _advance(self, task: Task) -> None:
        """Run `task` until it asks for model work (kept as `task.pending`) or ends; deliver what it made."""
        outputs: list[Any] = []
        try:
            for item in task.loop:
                if isinstance(item, Work):
                    task.pending = item
                    break
                outputs.append(item)
            else:
                self._deliver(task, outputs)
                self._end(task, None)
                return
        except BaseException as error:  # the request's own fault (a bad bias id, ...): it alone ends
            self._deliver(task, outputs)
            self._end(task, error)
            return
        self._deliver(task, outputs)

    def _deliver(self, task: Task, outputs: list[Any]) -> None:
        if not outputs:
            return
        now = time.perf_counter()
        if any(isinstance(output, Step) for output in outputs):
            self.stats.tokens += sum(isinstance(output, Step) for output in outputs)
            if task.last_output is None:
                self.stats.time_to_first_token.add(now - task.started)
            else:
                self.stats.inter_token_latency.add(now - task.last_output)
            task.last_output = now
        task.deliver(outputs)

    def _run_work(self, tasks: list[Task], run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as error:  # a forward that failed fails the requests whose rows were in it
            for task in tasks:
                self._end(task, error)
            return
        for task in tasks:
            task.pending = None

    def _end(self, task: Task, error: BaseException | None) -> None:
        self._running.remove(task)
        self.stats.running_rows -= task.rows
        task.pending = None
        task.deliver(error)

    def _fail_all(self, error: BaseException) -> None:
        for task in [*self._running, *self._waiting]:
            task.deliver(error)
        self._running.clear()
        self._waiting.clear()
        while self._calls:
            self._calls.popleft()[0].cancel()
