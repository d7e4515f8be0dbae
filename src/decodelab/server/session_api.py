"""The explorer's sessions over HTTP: a prompt you step through token by token.

    POST   /api/sessions                 start a session -> its state and its `secret`; or, with `trace` (a saved
                                         trace, see GET .../trace) instead of a prompt, replay it token for token
    GET    /api/sessions/{id}            its state (also while a generate runs: the steps made so far)
    GET    /api/sessions/{id}/trace      {"trace": Session.save(), "prompt_text", "model", "steps": [records]}
    POST   /api/sessions/{id}/step       choose one token (greedy or sampled, under the given config)
    POST   /api/sessions/{id}/append     force a token
    POST   /api/sessions/{id}/undo       take back `count` tokens (undo to step k: count = len(steps) - k)
    POST   /api/sessions/{id}/redo       make saved tokens again, {"tokens": [{id, draw, config?}]}: a sampled one
                                         by its draw number, so the same token comes back; a forced one appended
    POST   /api/sessions/{id}/generate   up to `count` steps, stopping where generation would; with "stream": true
                                         server-sent events, one per step as it is made (see `session_stream`)
    POST   /api/sessions/{id}/cancel     stop a running generate between steps -> {"cancelled", "state"}
    DELETE /api/sessions/{id}            end it (a running generate is stopped first)

Every call but the first sends the session's secret in the `X-Session-Secret` header. While a generate runs,
any other action on its session is a 409 (cancel it first). The state's `steps` are step records: each Step's
fields and how it was chosen (`how`, `draw`, `seed`, `settings`, see `session_state`); `seed` is the session's
(config.seed when it was started: the same seed and settings give the same sampled tokens). The `next` payload
carries the raw logits of the whole vocabulary (base64 float32, little-endian), so the page can re-apply
temperature, top-k, top-p and min-p as the sliders move without asking the server. On a remote model, whose
server told only its top tokens, it also says which (`reported`, `reported_ids`), the mass they hold
(`known_mass`; the rest is not known token by token) and the bounds of the entropy (`entropy_bounds`).

A `config` may carry a constraint (`config.constraint`, see `explorer_schemas`): the session then follows its
grammar through undo, a forbidden token appended is a 400, and a whole output stops with `constraint_complete`.
A constraint taken on mid-session applies to the whole output, so the tokens generated so far must fit it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Header, Request

from decodelab.errors import BadInput, DecodelabError
from decodelab.generation_config import GenerationConfig
from decodelab.server import session_stream
from decodelab.server.errors import ERROR_RESPONSES, APIError
from decodelab.server.explorer_schemas import (
    AppendRequest,
    GenerateRequest,
    PromptRequest,
    RedoRequest,
    SessionRequest,
    StepRequest,
    UndoRequest,
    make_generation_config,
)
from decodelab.server.session_state import check_can_continue, configure, session_state, step_record
from decodelab.server.sessions import SECRET_HEADER, LiveSession
from decodelab.server.sse import STREAM_RESPONSE, finite
from decodelab.session import Session

if TYPE_CHECKING:
    from decodelab.model import LM

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)


def prompt_token_rows(lm: LM, request: PromptRequest, ids: list[int]) -> list[dict]:
    """The prompt's token view (pieces, spans, specials); falls back to per-id pieces for an id prompt."""
    prompt = request.prompt_input()
    if isinstance(prompt, str) or request.is_chat():
        view = lm.chat_tokens(prompt, request.system) if request.is_chat() else lm.tokenize(prompt)
        if view.ids == ids:
            return [token.to_dict() for token in view]
    return id_rows(lm, ids)


def id_rows(lm: LM, ids: list[int]) -> list[dict]:
    """A token view of ids alone: each id's piece, and whether it is special."""
    from decodelab.tokens import token_piece

    special = set(lm.tokenizer.special_ids)
    return [{"id": i, "piece": token_piece(lm.tokenizer, i), "special": i in special} for i in ids]


def prompt_ids_and_rows(lm: LM, body: PromptRequest) -> tuple[list[int], list[dict]]:
    """The prompt's ids and token view (run on the model thread: tokenizing a long prompt takes a while)."""
    ids = lm.prompt_ids(body.prompt_input(), chat=body.is_chat(), system=body.system)
    return ids, prompt_token_rows(lm, body, ids)


def _app(request: Request):
    return request.app.state.decodelab


# The secret POST /api/sessions returned: every later call on the session sends it.
Secret = Annotated[str | None, Header(alias=SECRET_HEADER, description="the session's secret, from its creation")]


def _live(request: Request, session_id: str, secret: str | None) -> LiveSession:
    return _app(request).sessions.get(session_id, secret)


@router.post("/sessions")
async def start_session(body: SessionRequest, request: Request) -> dict:
    app = _app(request)
    if body.trace is not None:
        return await _replayed_session(app, body)
    config = make_generation_config(body.config)
    async with app.runner.admit():
        ids, rows = await app.runner.call(prompt_ids_and_rows, app.lm, body)
        app.sessions.check_room(len(ids))  # before the prefill allocates its cache
        session = await app.runner.call(lambda: app.lm.session(ids, config=config))
        live = app.sessions.add(session, rows)
        return {**await app.runner.call(session_state, live), "secret": live.secret}


def _trace_error(message: str, param: str = "trace") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code="invalid_trace")


def checked_trace(lm: LM, body: SessionRequest) -> dict:
    """The trace to replay, as `Session.save()` writes it, checked against this server: the model, the size, the
    configs (a constraint's source within the server's bounds)."""
    trace = body.trace
    assert trace is not None
    if body.prompt is not None or body.messages is not None or body.config or body.system is not None or body.chat:
        raise _trace_error("a replayed session takes its prompt and config from the trace: send the trace alone")
    if body.model is not None and body.model != lm.name:
        raise _trace_error(
            f"it was made with the model {body.model!r} and this server runs {lm.name!r}: replay it on that model"
        )
    vocab_size = lm.backend.vocab_size
    for where, ids in (("trace.prompt_ids", trace.prompt_ids), ("trace.tokens", [t.id for t in trace.tokens])):
        outside = next((i for i in ids if i >= vocab_size), None)
        if outside is not None:
            raise _trace_error(
                f"token id {outside} is outside this model's vocabulary ({vocab_size} tokens): was the trace "
                "made with another model?",
                where,
            )
    length = len(trace.prompt_ids) + len(trace.tokens)
    if length >= lm.context_length:
        raise _trace_error(f"it holds {length} tokens and {lm.name} reads at most {lm.context_length}: shorten it")
    configs: dict[str, tuple[str, dict]] = {}  # each distinct config once: where it first appears, its values
    named = [(f"trace.tokens[{i}].config", t.config) for i, t in enumerate(trace.tokens) if t.config is not None]
    for where, values in [("trace.config", trace.config), *named]:
        configs.setdefault(json.dumps(values, sort_keys=True), (where, values))
    for where, values in configs.values():
        _checked_config(values, where)
    return {
        "prompt_ids": trace.prompt_ids,
        "config": trace.config,
        "seed": trace.seed,
        "tokens": [saved_entry(token.id, token.draw, token.config) for token in trace.tokens],
    }


def saved_entry(token_id: int, draw: int | None, config: dict | None = None) -> dict:
    """A token entry as `Session.save()` writes it."""
    return {"id": token_id, "draw": draw} | ({} if config is None else {"config": config})


def _checked_config(values: dict, where: str, base: GenerationConfig | None = None) -> GenerationConfig:
    """A config from JSON, each error a 400 naming `where` (e.g. trace.config)."""
    try:
        return make_generation_config(values, base)
    except BadInput as error:
        raise _trace_error(str(error), where) from None
    except APIError as error:
        raise _trace_error(error.message, where) from None


def _replaying(lm: LM, saved: dict) -> Iterator[Any]:
    """A task: the trace's session rebuilt token by token (`Session.replaying`); yields it at the end."""
    try:
        session = yield from Session.replaying(lm.decoder, saved)
    except DecodelabError as error:
        raise _trace_error(str(error)) from None
    yield session


async def _replayed_session(app, body: SessionRequest) -> dict:
    saved = checked_trace(app.lm, body)
    async with app.runner.admit():
        app.sessions.check_room(len(saved["prompt_ids"]) + len(saved["tokens"]))  # before the prefill
        stream = await app.runner.start(_replaying(app.lm, saved))
        async with contextlib.aclosing(stream):
            session = [output async for output in stream][-1]
        rows = await app.runner.call(id_rows, app.lm, saved["prompt_ids"])
        live = app.sessions.add(session, rows)
        return {**await app.runner.call(session_state, live), "secret": live.secret}


async def _read(app, live: LiveSession, read: Any) -> dict:
    """`read(live)` on the model thread: between steps, so also while a generate runs (it holds the lock)."""
    async with app.runner.admit():
        if live.lock.running is not None:
            return await app.runner.call(read, live)
        async with live.lock:
            return await app.runner.call(read, live)


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, request: Request, secret: Secret = None) -> dict:
    return await _read(_app(request), _live(request, session_id, secret), session_state)


@router.get("/sessions/{session_id}/trace")
async def get_trace(session_id: str, request: Request, secret: Secret = None) -> dict:
    """The session as a file to keep: `trace` replays it (POST /api/sessions {"trace": ..., "model": ...}); `steps`
    are its step records (the page makes a CSV of them)."""
    app = _app(request)

    def trace(live: LiveSession) -> dict:
        session = live.session
        return finite(
            {
                "trace": session.save(),
                "prompt_text": session.decoder.tokenizer.decode(session.prompt_ids),
                "model": app.lm.name,
                "steps": [step_record(session, step) for step in session.steps],
            }
        )

    return await _read(app, _live(request, session_id, secret), trace)


@router.delete("/sessions/{session_id}")
async def end_session(session_id: str, request: Request, secret: Secret = None) -> dict:
    live = _app(request).sessions.remove(session_id, secret)
    running = live.lock.running
    if running is not None:  # stopped between steps before the answer: no task is left on the ended session
        await running.stopped("cancelled")
    return {"id": session_id, "deleted": True, "cancelled": running is not None and running.outcome == "cancelled"}


def _step(live: LiveSession, body: StepRequest) -> Iterator[Any]:
    """A task (see `runner.start`): its forward joins the batched step; yields the reply last."""
    configure(live.session, body)
    check_can_continue(live.session)
    step = yield from live.session.stepping()
    yield {"step": step_record(live.session, step), "state": session_state(live)}


def _append(live: LiveSession, body: AppendRequest) -> Iterator[Any]:
    if (body.token_id is None) == (body.text is None):
        raise BadInput("append needs exactly one of token_id or text")
    token: int | str = body.token_id if body.token_id is not None else cast(str, body.text)
    configure(live.session, body)
    step = yield from live.session.appending(token)
    yield {"step": step_record(live.session, step), "state": session_state(live)}


def _undo(live: LiveSession, body: UndoRequest) -> dict:
    session = live.session
    removed = [step_record(session, step) for step in session.steps[-body.count :]]
    session.undo(body.count)  # 1..len(steps), else one clear error
    return {"removed": removed, "state": session_state(live)}


def _redo(live: LiveSession, tokens: list[dict], configs: list[GenerationConfig]) -> Iterator[Any]:
    """A task: each token made again under its config (`Session.redoing`); one that does not come back takes back
    the whole redo. Yields the reply last."""
    session, made, before = live.session, [], live.session.config
    for index, (token, config) in enumerate(zip(tokens, configs)):
        try:
            made.append((yield from session.redoing(token, config)))
        except DecodelabError as error:
            if made:
                session.undo(len(made))
            if session.config != before:
                session.configure(before)
            raise APIError(
                400,
                f"tokens[{index}]: {error}: send each step as its record says, "
                '{"id": id, "draw": draw, "config": settings}; nothing was redone',
                param=f"tokens[{index}]",
                code="redo_diverged",
            ) from None
    yield {"steps": [step_record(session, step) for step in made], "state": session_state(live)}


@router.post("/sessions/{session_id}/step")
async def step(session_id: str, body: StepRequest, request: Request, secret: Secret = None) -> dict:
    app, live = _app(request), _live(request, session_id, secret)
    async with app.runner.admit(), live.lock:
        app.sessions.check_growth(live, 1)
        return finite(await app.runner.result(_step(live, body)))


@router.post("/sessions/{session_id}/append")
async def append(session_id: str, body: AppendRequest, request: Request, secret: Secret = None) -> dict:
    app, live = _app(request), _live(request, session_id, secret)
    async with app.runner.admit(), live.lock:
        app.sessions.check_growth(live, 1)
        return finite(await app.runner.result(_append(live, body)))


@router.post("/sessions/{session_id}/undo")
async def undo(session_id: str, body: UndoRequest, request: Request, secret: Secret = None) -> dict:
    app, live = _app(request), _live(request, session_id, secret)
    async with app.runner.admit(), live.lock:
        return finite(await app.runner.call(_undo, live, body))


@router.post("/sessions/{session_id}/redo")
async def redo(session_id: str, body: RedoRequest, request: Request, secret: Secret = None) -> dict:
    """Make tokens again as their records say (after an undo: the same tokens come back)."""
    app, live = _app(request), _live(request, session_id, secret)
    seeded = GenerationConfig(seed=live.session.seed)
    base = None if body.config is None else _checked_config(body.config, "config", seeded)
    configs = [
        base if token.config is None else _checked_config(token.config, f"tokens[{index}].config", seeded)
        for index, token in enumerate(body.tokens)
    ]
    async with app.runner.admit(), live.lock:
        app.sessions.check_growth(live, len(body.tokens))
        own = [live.session.config if config is None else config for config in configs]  # none: the session's
        tokens = [saved_entry(token.id, token.draw) for token in body.tokens]
        return finite(await app.runner.result(_redo(live, tokens, own)))


@router.post("/sessions/{session_id}/generate", responses=STREAM_RESPONSE)
async def generate(session_id: str, body: GenerateRequest, request: Request, secret: Secret = None):
    """Up to `count` steps; with `stream`, server-sent events as they are made (see `session_stream`)."""
    app, live = _app(request), _live(request, session_id, secret)
    if body.stream:
        return await session_stream.generate_events(app, live, body)
    return await session_stream.generate_json(app, live, body, request)


@router.post("/sessions/{session_id}/cancel")
async def cancel(session_id: str, request: Request, secret: Secret = None) -> dict:
    """Stop the session's running generate between steps; answers once it has stopped."""
    app = _app(request)
    return finite(await session_stream.cancel(app, _live(request, session_id, secret)))
