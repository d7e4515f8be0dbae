"""A session's generate: its steps as they are made (server-sent events, or one JSON answer), and how it stops.

    POST /api/sessions/{id}/generate {"count": N, "stream": true, ...}  ->  text/event-stream
        data: {"step": <step record>, "index": k}      one per step as it is made, k counting from 0
        data: {"error": {...}}                           only when the generation failed after its first step
        data: {"state": <session state>, "stopped": "count" | <a stop reason's kind> | "cancelled" | "error"}
        data: [DONE]
    without "stream": {"steps": [<step record>...], "state": ..., "stopped": ...} once it has stopped

A generate is a task of the batching scheduler (`runner.start`) that holds the session's lock for its whole run
(`SessionLock.acquire_for`): meanwhile every other action on the session is a 409. Errors before its first step
are a 4xx JSON answer, not a broken stream. It stops between steps when its count is made or a stop reason
fires, or when it is cancelled: its client closes the stream (or leaves a JSON request), POST .../cancel, or
DELETE of the session. A cancelled one ends as "cancelled" in /api/stats and leaves whole steps only: the
scheduler closes a task between ticks, and `Running.stop` marks the task, then reads the state on the model
thread, where no step of that task can come after it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from decodelab.server.errors import APIError, in_band_error
from decodelab.server.explorer_schemas import GenerateRequest
from decodelab.server.session_state import check_can_continue, configure, session_state, step_record
from decodelab.server.sse import EventStream, event, finite

if TYPE_CHECKING:
    from decodelab.server.runner import TaskStream, Ticket
    from decodelab.server.sessions import LiveSession


class Running:
    """A generate on a session: its ticket, its task's stream, and its one way to stop (`stop`)."""

    def __init__(self, app: Any, live: LiveSession, ticket: Ticket):
        self.app, self.live, self.ticket = app, live, ticket
        self.start = 0  # the session's steps before this generate
        self.stream: TaskStream | None = None
        self.outcome = "completed"  # how its ticket ends: completed, failed or cancelled
        self.ran_to_end = False  # set on the model thread: the count was made, or a stop reason fired
        self._attached = asyncio.Event()  # the task's stream exists, or its start failed
        self._stopping: asyncio.Task | None = None

    def steps(self, body: GenerateRequest) -> Iterator[Any]:
        """The task: one step per output until `count` steps or a stop reason (the step that stops is included)."""
        session = self.live.session
        configure(session, body)
        for _ in range(body.count):
            if session.stop_reason is not None and session.steps:
                break
            check_can_continue(session)
            yield (yield from session.stepping())
        self.ran_to_end = True

    @property
    def stop_asked(self) -> bool:
        """Something asked the run to stop (POST .../cancel, DELETE, its stream closed): it stops between steps."""
        return self._stopping is not None

    def stop(self, outcome: str) -> asyncio.Task:
        """Stop the run between steps if it still runs, end its ticket as `outcome` and free the session; the
        task's result is the session's state then. Once: whoever asks later gets the first stop."""
        if self._stopping is None:
            self.outcome = outcome
            self._stopping = asyncio.ensure_future(self._stop())
        return self._stopping

    async def _stop(self) -> dict | None:
        await self._attached.wait()
        if self.stream is not None:
            self.stream.close()  # the scheduler closes the task at its next tick, between steps
        try:
            # A call runs between ticks: after it, the marked task makes no further step.
            return await self.app.runner.call(session_state, self.live)
        except Exception:  # the server is shutting down
            return None
        finally:
            if self.outcome == "cancelled" and self.ran_to_end:
                self.outcome = "completed"  # it had finished before the stop came
            self.ticket.end(self.outcome)
            self.live.lock.release_for(self)

    async def stopped(self, outcome: str) -> dict:
        """`stop(outcome)` and wait for it (a caller cancelled meanwhile leaves the stop running)."""
        state = await asyncio.shield(self.stop(outcome))
        if state is None:
            raise RuntimeError("the server is shutting down")
        return state

    def why(self, state: dict) -> str:
        """Why it stopped, once stopped (`state` is the state then): cancelled, error, a stop reason's kind, or
        count."""
        if self.outcome in ("cancelled", "failed"):
            return "error" if self.outcome == "failed" else "cancelled"
        return state["stop_reason"]["kind"] if state["stop_reason"] else "count"


async def start_generate(app: Any, live: LiveSession, body: GenerateRequest) -> Running:
    """Admit a generate, take the session (409 while another runs) and start its task; every error up to its
    first step is raised here, to be a 4xx answer."""
    ticket = app.runner.reserve()
    running = Running(app, live, ticket)
    try:
        await live.lock.acquire_for(running)
        if running.stop_asked:  # cancelled (or its session deleted) while a step finished
            raise APIError(409, "the generation was cancelled before it started", code="generation_cancelled")
        app.sessions.check_growth(live, body.count)
        running.start = len(live.session.steps)
        running.stream = await app.runner.start(running.steps(body))
    except BaseException as error:
        ticket.end_for(error)
        live.lock.release_for(running)
        raise
    finally:
        running._attached.set()
    return running


async def generate_json(app: Any, live: LiveSession, body: GenerateRequest, request: Request) -> dict:
    """The whole generate as one answer: its steps, the state after them and why it stopped."""
    running = await start_generate(app, live, body)
    assert running.stream is not None
    records = []
    try:
        async for step in running.stream:
            records.append(step_record(live.session, step))
            if await request.is_disconnected():
                running.stop("cancelled")
                break
    except Exception:
        await running.stopped("failed")
        raise
    except BaseException:  # the route was cancelled: its client left
        running.stop("cancelled")
        raise
    state = await running.stopped("completed")
    records += state["steps"][running.start + len(records) :]  # made before the stop, not yet read here
    return finite({"steps": records, "state": state, "stopped": running.why(state)})


async def generate_events(app: Any, live: LiveSession, body: GenerateRequest) -> EventStream:
    """The generate as server-sent events (see the module's docstring)."""
    running = await start_generate(app, live, body)
    assert running.stream is not None
    stream = running.stream

    async def frames():
        sent, failure = 0, None
        try:
            async for step in stream:
                yield event({"step": step_record(live.session, step), "index": step.index - running.start})
                sent += 1
        except Exception as error:  # the 200 is sent: report in-band
            running.stop("failed")
            failure = error
        state = await running.stopped("completed")
        if failure is not None:
            yield event(in_band_error(failure))
        for index, record in enumerate(state["steps"][running.start + sent :], sent):
            yield event({"step": record, "index": index})  # made before the stop, not yet sent
        yield event({"state": state, "stopped": running.why(state)})
        yield event("[DONE]")

    def close() -> None:  # however the response ended: a client gone mid-stream cancels the generate
        running.stop("cancelled")

    return EventStream(frames(), on_close=close)


async def cancel(app: Any, live: LiveSession) -> dict:
    """Stop the session's generate, if one runs, and answer once it has stopped: {"cancelled", "state"}."""
    running = live.lock.running
    if running is None:
        return {"cancelled": False, "state": await app.runner.call(session_state, live)}
    state = await running.stopped("cancelled")
    return {"cancelled": running.outcome == "cancelled", "state": state}
