"""The explorer's sessions over HTTP: a prompt you step through token by token.

    POST /api/sessions                   start a session -> its state and its `secret`
    GET  /api/sessions/{id}              its state
    POST /api/sessions/{id}/step         choose one token (greedy or sampled, under the given config)
    POST /api/sessions/{id}/append       force a token
    POST /api/sessions/{id}/undo         take tokens back
    POST /api/sessions/{id}/generate     up to `count` steps, stopping where generation would
    DELETE /api/sessions/{id}

Every call but the first sends the session's secret in the `X-Session-Secret` header. The `next` payload
carries the raw logits of the whole vocabulary (base64 float32, little-endian), so the page can re-apply
temperature, top-k, top-p and min-p as the sliders move without asking the server. On a remote model, whose
server told only its top tokens, it also says which (`reported`, `reported_ids`), the mass they hold
(`known_mass`; the rest is not known token by token) and the bounds of the entropy (`entropy_bounds`).

A `config` may carry a constraint (`config.constraint`, see `explorer_schemas`): the session then follows its
grammar through undo, a forbidden token appended is a 400, and a whole output stops with `constraint_complete`.
A constraint taken on mid-session applies to the whole output, so the tokens generated so far must fit it.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any, cast

from fastapi import APIRouter, Header, Request

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.server.errors import ERROR_RESPONSES
from decodelab.server.explorer_schemas import (
    TOP_FOR_PAGE,
    AppendRequest,
    GenerateRequest,
    PromptRequest,
    StepRequest,
    UndoRequest,
    make_generation_config,
)
from decodelab.server.sessions import SECRET_HEADER, LiveSession
from decodelab.server.sse import finite
from decodelab.session import Session

if TYPE_CHECKING:
    from decodelab.model import LM

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)


def encode_logits(logits) -> str:
    """(V,) tensor -> base64 of little-endian float32 values (what the page decodes into a Float32Array)."""
    return base64.b64encode(logits.detach().float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")


def next_payload(session: Session, top: int = TOP_FOR_PAGE) -> dict | None:
    """The next-token distribution of a session: raw logits for the page, top candidates raw and after."""
    if session.stop_reason is not None and session.stop_reason.kind == "context_full":
        return None
    raw = session.distribution()
    after = session.distribution(after_samplers=True)
    payload = {
        "vocab_size": int(raw.logits.numel()),
        "logits": encode_logits(raw.logits),
        "entropy": raw.entropy,  # on a remote model, its upper bound (see entropy_bounds)
        "top": [candidate.to_dict() for candidate in raw.top(top)],
        "after": [{**c.to_dict(), "raw_prob": raw.prob(c.id)} for c in after.top(top) if c.prob > 0],
    }
    if raw.reported is not None:  # a remote server's top tokens: which they are, and what is not known
        reported_ids = raw.reported.nonzero().flatten().tolist()
        payload |= {
            "reported": len(reported_ids),
            "reported_ids": reported_ids,  # the page's chain keeps these only, as the server's `reported` stage
            "known_mass": raw.known_mass,
            "entropy_bounds": list(raw.entropy_bounds),
        }
    return payload


def session_state(live: LiveSession, top: int = TOP_FOR_PAGE) -> dict:
    session = live.session
    reason = session.stop_reason
    return finite(
        {
            "id": live.id,
            "prompt": {"ids": session.prompt_ids, "tokens": live.prompt_tokens},
            "steps": [step.to_dict() for step in session.steps],
            "text": session.text,
            "full_text": session.full_text,
            "stop_reason": reason.to_dict() | {"text": str(reason)} if reason else None,
            "config": session.config.to_dict(),
            "seed": session.seed,
            "next": next_payload(session, top),
        }
    )


def prompt_token_rows(lm: LM, request: PromptRequest, ids: list[int]) -> list[dict]:
    """The prompt's token view (pieces, spans, specials); falls back to per-id pieces for an id prompt."""
    from decodelab.tokens import token_piece

    prompt = request.prompt_input()
    if isinstance(prompt, str) or request.is_chat():
        view = lm.chat_tokens(prompt, request.system) if request.is_chat() else lm.tokenize(prompt)
        if view.ids == ids:
            return [token.to_dict() for token in view]
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
async def start_session(body: PromptRequest, request: Request) -> dict:
    app = _app(request)
    config = make_generation_config(body.config)
    async with app.runner.admit():
        ids, rows = await app.runner.call(prompt_ids_and_rows, app.lm, body)
        app.sessions.check_room(len(ids))  # before the prefill allocates its cache
        session = await app.runner.call(lambda: app.lm.session(ids, config=config))
        live = app.sessions.add(session, rows)
        return {**await app.runner.call(session_state, live), "secret": live.secret}


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, request: Request, secret: Secret = None) -> dict:
    app = _app(request)
    live = _live(request, session_id, secret)
    async with app.runner.admit(), live.lock:
        return await app.runner.call(session_state, live)


@router.delete("/sessions/{session_id}")
async def end_session(session_id: str, request: Request, secret: Secret = None) -> dict:
    _app(request).sessions.remove(session_id, secret)
    return {"id": session_id, "deleted": True}


def requested_config(session: Session, body: StepRequest | AppendRequest) -> GenerationConfig:
    """The config a step, an append or a look at the distribution asks for: `body.config` in place of the
    session's own when sent, with `body.greedy`. A constraint it brings must allow what was generated so far."""
    config = session.config
    if body.config is not None:
        config = make_generation_config(body.config, GenerationConfig(seed=session.seed))
    if body.greedy is not None:
        config = config.with_(greedy=body.greedy)
    if config.constraint is not None and config.constraint != session.config.constraint and session.steps:
        check_constraint_fits(session, config)
    return config


def check_constraint_fits(session: Session, config: GenerationConfig) -> None:
    """A constraint taken on mid-session applies to the whole output: the tokens generated so far must be a
    start it allows."""
    try:
        config.chain(session.decoder).complete(session.token_ids)
    except BadInput:
        kind = config.constraint.kind if config.constraint is not None else "new"
        count = len(session.steps)
        raise BadInput(
            f"the text generated so far ({session.text[-40:]!r}, {count} token{'s' if count != 1 else ''}) does not "
            f"match the {kind.replace('_', ' ')} constraint: undo it, or start over, to apply the constraint"
        ) from None


def _configure(session: Session, body: StepRequest | AppendRequest) -> None:
    config = requested_config(session, body)
    if config != session.config:  # the same config keeps the chain, and the grammar's matchers, as they are
        session.configure(config)


def _check_can_continue(session: Session) -> None:
    reason = session.stop_reason
    if reason is not None and reason.kind == "context_full":
        raise BadInput(f"the context is full ({session.decoder.context_length} tokens): undo some tokens or start over")


def _step(live: LiveSession, body: StepRequest) -> Iterator[Any]:
    """A task (see `runner.start`): its forward joins the batched step; yields the reply last."""
    _configure(live.session, body)
    _check_can_continue(live.session)
    step = yield from live.session.stepping()
    yield {"step": step.to_dict(), "state": session_state(live)}


def _append(live: LiveSession, body: AppendRequest) -> Iterator[Any]:
    if (body.token_id is None) == (body.text is None):
        raise BadInput("append needs exactly one of token_id or text")
    token: int | str = body.token_id if body.token_id is not None else cast(str, body.text)
    _configure(live.session, body)
    step = yield from live.session.appending(token)
    yield {"step": step.to_dict(), "state": session_state(live)}


def _undo(live: LiveSession, body: UndoRequest) -> dict:
    removed = live.session.undo(body.count)
    return {"removed": [step.to_dict() for step in removed], "state": session_state(live)}


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


def _session_steps(live: LiveSession, body: GenerateRequest) -> Iterator[Any]:
    """A task: one step per output until `count` steps or a stop reason (the step that stops is included).
    Cancelled, it stops between steps (the scheduler closes a task only once its forward has run)."""
    session = live.session
    _configure(session, body)
    for _ in range(body.count):
        if session.stop_reason is not None and session.steps:
            return
        _check_can_continue(session)
        yield (yield from session.stepping())


@router.post("/sessions/{session_id}/generate")
async def generate(session_id: str, body: GenerateRequest, request: Request, secret: Secret = None) -> dict:
    app = _app(request)
    live = _live(request, session_id, secret)
    steps = []
    async with app.runner.admit(), live.lock:
        app.sessions.check_growth(live, body.count)
        stream = await app.runner.start(_session_steps(live, body))
        async with contextlib.aclosing(stream):
            async for item in stream:
                steps.append(item.to_dict())
                if await request.is_disconnected():
                    break
        return finite({"steps": steps, "state": await app.runner.call(session_state, live)})
