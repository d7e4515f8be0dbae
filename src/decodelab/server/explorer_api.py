"""decodelab's own endpoints, used by the web explorer (and by anyone scripting against the server).

    GET  /api/info                       model, context, vocabulary size, whether it has a chat template
    POST /api/tokenize                   the token view of a prompt
    POST /api/next                       the next-token distribution: raw and after the sampler chain
    POST /api/sessions                   start a session -> its state (prompt tokens, steps, next distribution)
    GET  /api/sessions/{id}              its state
    POST /api/sessions/{id}/step         choose one token (greedy or sampled, under the given config)
    POST /api/sessions/{id}/append       force a token
    POST /api/sessions/{id}/undo         take tokens back
    POST /api/sessions/{id}/generate     up to `count` steps, stopping where generation would
    DELETE /api/sessions/{id}
    POST /api/trace                      a generation as server-sent events: one `step` per token, then `result`
    POST /api/score | /api/beam | /api/compare
    GET  /api/stats                      runner counters (admitted, rejected, cancelled, tokens, ...)

The `next` payload carries the raw logits of the whole vocabulary (base64 float32, little-endian), so the
page can re-apply temperature, top-k, top-p and min-p as the sliders move without asking the server.
"""

from __future__ import annotations

import base64
import contextlib
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.server.errors import APIError, error_body
from decodelab.server.sessions import LiveSession
from decodelab.server.sse import EventStream, event, finite
from decodelab.session import Session

router = APIRouter(prefix="/api")
TOP_FOR_PAGE = 50  # labelled candidates per distribution; sampler stages never reorder the raw ranking
MAX_GENERATE_STEPS = 512


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptRequest(Strict):
    prompt: str | list[int] | None = None  # plain text (or ids) ...
    messages: list[dict[str, Any]] | None = None  # ... or chat messages
    chat: bool = False  # render `prompt` through the chat template
    system: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # GenerationConfig fields

    def prompt_input(self) -> Any:
        if self.messages is not None:
            if not self.messages:
                raise BadInput("messages is empty: send at least one {'role', 'content'} message")
            return self.messages
        if self.prompt is None or self.prompt == "" or self.prompt == []:
            raise BadInput("prompt is empty: type some text for the model to continue")
        return self.prompt

    def is_chat(self) -> bool:
        return self.chat or self.messages is not None


class NextRequest(PromptRequest):
    top: int = Field(TOP_FOR_PAGE, ge=1, le=1000)


class TraceRequest(PromptRequest):
    n: int = Field(1, ge=1, le=16)


class StepRequest(Strict):
    greedy: bool = False
    config: dict[str, Any] | None = None  # replaces the session's config from this step on


class AppendRequest(Strict):
    token_id: int | None = None
    text: str | None = None  # a text that is exactly one token


class UndoRequest(Strict):
    count: int = Field(1, ge=1)


class GenerateRequest(StepRequest):
    count: int = Field(16, ge=1, le=MAX_GENERATE_STEPS)


class ScoreRequest(Strict):
    text: str
    prompt: str | None = None


class BeamRequest(Strict):
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    chat: bool = False
    num_beams: int = Field(4, ge=2, le=16)
    max_new_tokens: int = Field(32, ge=1, le=MAX_GENERATE_STEPS)
    length_penalty: float = 1.0


class CompareRequest(Strict):
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    chat: bool = False
    strategies: str = "greedy; beam:4; temperature:0.8,top_p:0.9"
    max_new_tokens: int = Field(32, ge=1, le=MAX_GENERATE_STEPS)
    seed: int = 0


def make_generation_config(values: dict[str, Any] | None, base: GenerationConfig | None = None) -> GenerationConfig:
    """A GenerationConfig from JSON fields; unknown names and bad values are one BadInput each."""
    from decodelab.model import make_config

    values = dict(values or {})
    bias = values.get("logit_bias")
    if bias is not None:
        try:
            values["logit_bias"] = {int(token): float(value) for token, value in dict(bias).items()}
        except (TypeError, ValueError):
            raise BadInput(f"logit_bias must map token ids to numbers, e.g. {{\"50256\": -100}}, got {bias!r}") from None
    if isinstance(values.get("stop"), str):
        values["stop"] = (values["stop"],)
    for name in ("ban", "stop", "stop_token_ids", "samplers"):
        if values.get(name) is not None:
            if not isinstance(values[name], list | tuple):
                raise BadInput(f"{name} must be a list, got {values[name]!r}")
            values[name] = tuple(values[name])
    return make_config(base, values)


def encode_logits(logits) -> str:
    """(V,) tensor -> base64 of little-endian float32 values (what the page decodes into a Float32Array)."""
    return base64.b64encode(logits.detach().float().cpu().numpy().astype("<f4").tobytes()).decode("ascii")


def next_payload(session: Session, top: int = TOP_FOR_PAGE) -> dict | None:
    """The next-token distribution of a session: raw logits for the page, top candidates raw and after."""
    if session.stop_reason is not None and session.stop_reason.kind == "context_full":
        return None
    raw = session.distribution()
    after = session.distribution(after_samplers=True)
    return {
        "vocab_size": int(raw.logits.numel()),
        "logits": encode_logits(raw.logits),
        "entropy": raw.entropy,
        "top": [candidate.to_dict() for candidate in raw.top(top)],
        "after": [{**c.to_dict(), "raw_prob": raw.prob(c.id)} for c in after.top(top) if c.prob > 0],
    }


def session_state(live: LiveSession, top: int = TOP_FOR_PAGE) -> dict:
    session = live.session
    reason = session.stop_reason
    return finite({
        "id": live.id,
        "prompt": {"ids": session.prompt_ids, "tokens": live.prompt_tokens},
        "steps": [step.to_dict() for step in session.steps],
        "text": session.text,
        "full_text": session.full_text,
        "stop_reason": reason.to_dict() | {"text": str(reason)} if reason else None,
        "config": session.config.to_dict(),
        "seed": session.seed,
        "next": next_payload(session, top),
    })


def prompt_token_rows(lm, request: PromptRequest, ids: list[int]) -> list[dict]:
    """The prompt's token view (pieces, spans, specials); falls back to per-id pieces for an id prompt."""
    from decodelab.tokens import token_piece

    prompt = request.prompt_input()
    if isinstance(prompt, str) or request.is_chat():
        view = lm.chat_tokens(prompt, request.system) if request.is_chat() else lm.tokenize(prompt)
        if view.ids == ids:
            return [token.to_dict() for token in view]
    special = set(lm.tokenizer.special_ids)
    return [{"id": i, "piece": token_piece(lm.tokenizer, i), "special": i in special} for i in ids]


def _app(request: Request):
    return request.app.state.decodelab


@router.get("/info")
async def info(request: Request) -> dict:
    app = _app(request)
    lm = app.lm
    return {
        "model": lm.name,
        "source": lm.source,
        "context_length": lm.context_length,
        "vocab_size": lm.backend.vocab_size,
        "chat_template": lm.tokenizer.chat_template is not None,
        "stop_ids": sorted(lm.stop_ids()),
        "max_queue": app.runner.max_queue,
        "api_key_required": app.api_key is not None,
    }


@router.get("/stats")
async def stats(request: Request) -> dict:
    app = _app(request)
    return {**app.runner.stats.to_dict(), "sessions": len(app.sessions), "max_queue": app.runner.max_queue}


@router.post("/tokenize")
async def tokenize(body: PromptRequest, request: Request) -> dict:
    lm = _app(request).lm
    prompt = body.prompt_input()
    if body.is_chat():
        view = lm.chat_tokens(prompt, body.system)
        return {"text": view.text, "chat": True, "tokens": [token.to_dict() for token in view]}
    if not isinstance(prompt, str):
        raise BadInput("prompt must be text to tokenize (got token ids)")
    view = lm.tokenize(prompt)
    return {"text": view.text, "chat": False, "tokens": [token.to_dict() for token in view]}


@router.post("/next")
async def next_token(body: NextRequest, request: Request) -> dict:
    app = _app(request)
    session = await app.runner.call(_new_session, app.lm, body)
    return finite({
        "prompt": {"ids": session.prompt_ids, "tokens": prompt_token_rows(app.lm, body, session.prompt_ids)},
        "config": session.config.to_dict(),
        "next": await app.runner.call(next_payload, session, body.top),
    })


def _new_session(lm, body: PromptRequest) -> Session:
    return lm.session(body.prompt_input(), chat=body.is_chat(), system=body.system,
                      config=make_generation_config(body.config))


@router.post("/sessions")
async def start_session(body: PromptRequest, request: Request) -> dict:
    app = _app(request)
    session = await app.runner.call(_new_session, app.lm, body)
    live = app.sessions.add(session, prompt_token_rows(app.lm, body, session.prompt_ids))
    return await app.runner.call(session_state, live)


@router.get("/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> dict:
    app = _app(request)
    return await app.runner.call(session_state, app.sessions.get(session_id))


@router.delete("/sessions/{session_id}")
async def end_session(session_id: str, request: Request) -> dict:
    _app(request).sessions.remove(session_id)
    return {"id": session_id, "deleted": True}


def _configure(session: Session, body: StepRequest) -> None:
    if body.config is not None:
        session.configure(make_generation_config(body.config, GenerationConfig(seed=session.seed)))
    if body.greedy != session.config.greedy:
        session.configure(greedy=body.greedy)


def _step(live: LiveSession, body: StepRequest) -> dict:
    _configure(live.session, body)
    _check_can_continue(live.session)
    step = live.session.step()
    return {"step": step.to_dict(), "state": session_state(live)}


def _check_can_continue(session: Session) -> None:
    reason = session.stop_reason
    if reason is not None and reason.kind == "context_full":
        raise BadInput(f"the context is full ({session.lm.context_length} tokens): undo some tokens or start over")


@router.post("/sessions/{session_id}/step")
async def step(session_id: str, body: StepRequest, request: Request) -> dict:
    app = _app(request)
    return finite(await app.runner.call(_step, app.sessions.get(session_id), body))


def _append(live: LiveSession, body: AppendRequest) -> dict:
    if (body.token_id is None) == (body.text is None):
        raise BadInput("append needs exactly one of token_id or text")
    step = live.session.append(body.token_id if body.token_id is not None else body.text)
    return {"step": step.to_dict(), "state": session_state(live)}


@router.post("/sessions/{session_id}/append")
async def append(session_id: str, body: AppendRequest, request: Request) -> dict:
    app = _app(request)
    return finite(await app.runner.call(_append, app.sessions.get(session_id), body))


def _undo(live: LiveSession, body: UndoRequest) -> dict:
    removed = live.session.undo(body.count)
    return {"removed": [step.to_dict() for step in removed], "state": session_state(live)}


@router.post("/sessions/{session_id}/undo")
async def undo(session_id: str, body: UndoRequest, request: Request) -> dict:
    app = _app(request)
    return finite(await app.runner.call(_undo, app.sessions.get(session_id), body))


def _session_steps(live: LiveSession, body: GenerateRequest):
    """One step per item until `count` steps or a stop reason (the step that stops is included)."""
    session = live.session
    _configure(session, body)
    for _ in range(body.count):
        if session.stop_reason is not None and session.steps:
            return
        _check_can_continue(session)
        yield session.step()


@router.post("/sessions/{session_id}/generate")
async def generate(session_id: str, body: GenerateRequest, request: Request) -> dict:
    app = _app(request)
    live = app.sessions.get(session_id)
    steps = []
    async with app.runner.admit():
        async with contextlib.aclosing(app.runner.iterate(_session_steps(live, body))) as stream:
            async for item in stream:
                steps.append(item.to_dict())
                if await request.is_disconnected():
                    break
    return finite({"steps": steps, "state": await app.runner.call(session_state, live)})


@router.post("/trace")
async def trace(body: TraceRequest, request: Request) -> EventStream:
    """Every Step record of a generation as it happens (`event: step`), then `event: result` per row."""
    app = _app(request)
    lm = app.lm
    release = app.runner.reserve()  # 429 now, before the stream starts

    def start():
        generation = lm.generation(body.prompt_input(), chat=body.is_chat(), system=body.system, n=body.n,
                                   config=make_generation_config(body.config))
        return generation, app.runner.primed(iter(generation))

    try:
        generation, steps = await app.runner.call(start)  # a bad request is a 4xx, before the stream starts
    except BaseException:
        release()
        raise

    async def frames():
        try:
            async with contextlib.aclosing(app.runner.iterate(steps)) as stream:
                async for item in stream:
                    yield event(item.to_dict(), "step")
            for result in generation.results:
                yield event(result.to_dict(), "result")
        except Exception as error:  # the 200 is sent: report in-band
            yield event(error_body(f"generation failed: {type(error).__name__}: {error}", "server_error"), "error")

    return EventStream(frames(), on_close=release)


@router.post("/score")
async def score(body: ScoreRequest, request: Request) -> dict:
    app = _app(request)
    result = await app.runner.call(lambda: app.lm.score(body.text, body.prompt))
    return finite(result.to_dict())


def _prompt_of(body) -> Any:
    if body.messages is not None:
        return body.messages
    if not body.prompt:
        raise BadInput("prompt is empty: type some text for the model to continue")
    return body.prompt


@router.post("/beam")
async def beam(body: BeamRequest, request: Request) -> dict:
    app = _app(request)
    async with app.runner.admit():
        result = await app.runner.call(lambda: app.lm.beam_search(
            _prompt_of(body), chat=body.chat or body.messages is not None, num_beams=body.num_beams,
            max_new_tokens=body.max_new_tokens, length_penalty=body.length_penalty))
    return finite(result.to_dict())


@router.post("/compare")
async def compare(body: CompareRequest, request: Request) -> dict:
    from decodelab.compare import compare as run_compare, parse_strategies

    app = _app(request)
    strategies = parse_strategies(body.strategies)
    async with app.runner.admit():
        outcomes = await app.runner.call(lambda: run_compare(
            app.lm, app.lm.prompt_ids(_prompt_of(body), chat=body.chat or body.messages is not None), strategies,
            seed=body.seed, max_new_tokens=body.max_new_tokens))
    return finite({"outcomes": [outcome.to_dict() for outcome in outcomes]})
