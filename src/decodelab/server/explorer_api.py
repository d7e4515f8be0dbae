"""decodelab's own endpoints, used by the web explorer (and by anyone scripting against the server).

    GET  /api/info                       model, compute mode, context, vocabulary size, chat template, the
                                         server's limits, and the sampler stages (from the registry) for the
                                         page's controls
    GET  /api/stats                      runner counters (admitted, rejected, cancelled, tokens, ...)
    POST /api/tokenize                   the token view of a prompt
    POST /api/next                       the next-token distribution: raw and after the sampler chain
    POST /api/trace                      a generation as server-sent events: one `step` per token, then `result`
    POST /api/score | /api/beam | /api/compare
    POST /api/sessions/{id}/distribution a session's next-token distribution under another config (the page
                                         asks when a stage it does not run itself is on, a constraint among
                                         them: the reply says what the grammar allows)
    /api/sessions/...                    step through a prompt token by token (see `session_api`)

Every route that takes a `config` takes a constraint in it, `config.constraint = {"kind", "source"}` (see
`explorer_schemas`); each traced step's `stages` then starts with the constraint's report.

Every route that runs on the model thread is admitted first (429 with Retry-After when the queue is full)
and claims the KV-cache tokens it will hold before it allocates them (see `runner`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import torch
from fastapi import APIRouter, Request
from pydantic import Field

from decodelab.constraints import KINDS
from decodelab.engine import Generation
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, StageReport, all_settings, describe_stages
from decodelab.server.errors import ERROR_RESPONSES, APIError, in_band_error
from decodelab.server.explorer_schemas import (
    TOP_FOR_PAGE,
    BeamRequest,
    CompareRequest,
    NextRequest,
    PromptRequest,
    ScoreRequest,
    StepRequest,
    TraceRequest,
    make_generation_config,
)
from decodelab.server.limits import kv_bytes_per_token, kv_cost
from decodelab.server.session_api import Secret, prompt_ids_and_rows
from decodelab.server.session_state import next_payload, requested_config
from decodelab.server.sse import EventStream, event, finite

if TYPE_CHECKING:
    from decodelab.distribution import Distribution
    from decodelab.model import LM
    from decodelab.session import Session

router = APIRouter(prefix="/api", responses=ERROR_RESPONSES)


def _app(request: Request):
    return request.app.state.decodelab


@router.get("/info")
async def info(request: Request) -> dict:
    app = _app(request)
    lm = app.lm
    return {
        "model": lm.name,
        "source": lm.source,
        "mode": lm.mode.to_dict(),  # dtype, quantization, compiled: `exact` is false in a fast mode
        "compile_seconds": lm.compile_seconds,  # the decode step's warm-up, when it was compiled
        "context_length": lm.context_length,
        "vocab_size": lm.backend.vocab_size,
        "chat_template": lm.tokenizer.chat_template is not None,
        "stop_ids": sorted(lm.stop_ids()),
        "max_queue": app.limits.max_queue,
        "limits": app.limits.to_dict(),
        "kv_bytes_per_token": kv_bytes_per_token(lm.backend),
        "api_key_required": app.api_key is not None,
        "stages": describe_stages(),  # every sampler stage and its settings: the page builds its controls from it
        "default_order": list(DEFAULT_ORDER),
        "constraint_kinds": list(KINDS),  # config.constraint's kinds (see explorer_schemas): the page's selector
    }


@router.get("/tokenizer")
async def tokenizer(request: Request) -> dict:
    """The model's whole tokenizer (`tokenizers`' JSON, the chat template, the named special tokens and the eos
    ids), so that a decodelab pointed at this server (`decodelab.load("http://...")`) tokenizes exactly as it does."""
    lm = _app(request).lm
    return {
        "tokenizer_json": lm.tokenizer.backend.to_str(),
        "chat_template": lm.tokenizer.chat_template,
        "named_tokens": lm.tokenizer.named_tokens,
        "eos_ids": list(lm.eos_ids),
        "context_length": lm.context_length,
        "vocab_size": lm.backend.vocab_size,
    }


@router.get("/stats")
async def stats(request: Request) -> dict:
    app = _app(request)
    return {
        **app.runner.stats_dict(),
        "sessions": len(app.sessions),
        "session_kv_tokens": app.sessions.kv_tokens(),
        "max_queue": app.limits.max_queue,
    }


def _tokenize(lm: LM, body: PromptRequest) -> dict:
    prompt = body.prompt_input()
    if body.is_chat():
        view = lm.chat_tokens(prompt, body.system)
        return {"text": view.text, "chat": True, "tokens": [token.to_dict() for token in view]}
    if not isinstance(prompt, str):
        raise BadInput("prompt must be text to tokenize (got token ids)")
    view = lm.tokenize(prompt)
    return {"text": view.text, "chat": False, "tokens": [token.to_dict() for token in view]}


@router.post("/tokenize")
async def tokenize(body: PromptRequest, request: Request) -> dict:
    app = _app(request)
    async with app.runner.admit():
        return await app.runner.call(_tokenize, app.lm, body)


def _next(lm: LM, body: NextRequest, ids: list[int], rows: list[dict]) -> dict:
    session = lm.session(ids, config=make_generation_config(body.config))
    return finite(
        {
            "prompt": {"ids": ids, "tokens": rows},
            "config": session.config.to_dict(),
            "next": next_payload(session, body.top),
        }
    )


@router.post("/next")
async def next_token(body: NextRequest, request: Request) -> dict:
    app = _app(request)
    make_generation_config(body.config)  # a bad config is refused before any work
    async with app.runner.admit() as ticket:
        ids, rows = await app.runner.call(prompt_ids_and_rows, app.lm, body)
        ticket.claim(*kv_cost(1, len(ids), 0, app.lm.context_length))
        return await app.runner.call(_next, app.lm, body, ids, rows)


class DistributionRequest(StepRequest):
    """A config to look through, as a step would send it; the session keeps its own."""

    ids: list[int] = Field(default_factory=list, max_length=1000)  # tokens whose probability to report
    top: int = Field(TOP_FOR_PAGE, ge=1, le=1000)


def _session_distribution(live, body: DistributionRequest) -> dict:
    """The session's next-token distribution after the chain `body` configures, the session left as it was."""
    session = live.session
    reason = session.stop_reason
    if reason is not None and reason.kind == "context_full":
        raise BadInput("the context is full: there is no next token to look at; undo some tokens or start over")
    config = requested_config(session, body)
    own = config == session.config  # the session's own chain: its grammar's matchers are already in place
    raw, after = session.distribution(), session.distribution(after_samplers=True, config=None if own else config)
    vocab_size = raw.logits.numel()
    outside = [token for token in body.ids if not 0 <= token < vocab_size]
    if outside:
        raise BadInput(f"ids must be token ids in [0, {vocab_size}), got {outside[0]!r}")
    possible = torch.isfinite(after.logits)  # (V,) tokens the chain left
    if not bool(possible.any()):
        raise BadInput("the sampler chain removed every token: leave at least one token allowed")
    choice = int(after.logits.argmax())
    probs = after.probs  # (V,)
    if config.is_greedy:  # the argmax is certain
        probs = (torch.arange(vocab_size) == choice).float()
    allowed = constraint_mask(session, config)  # (V,) or None
    return finite(
        {
            "config": config.to_dict(),
            "greedy": config.is_greedy,
            "argmax": choice,
            "kept": 1 if config.is_greedy else int(possible.sum()),
            "kept_raw_mass": raw.prob(choice) if config.is_greedy else float(raw.probs[possible].sum()),
            "entropy": after.entropy,  # of the chain's distribution, before a greedy pick
            "probs": [float(probs[token]) for token in body.ids],
            "constraint": None if allowed is None else constraint_report(raw, allowed).to_dict(),
            "allowed": None if allowed is None else [bool(allowed[token]) for token in body.ids],
            "after": [
                {**c.to_dict(), "prob": float(probs[c.id]), "raw_prob": raw.prob(c.id)}
                for c in after.top(body.top)
                if float(probs[c.id]) > 0
            ],
        }
    )


def constraint_mask(session: Session, config: GenerationConfig) -> torch.Tensor | None:
    """(V,) bool: the tokens `config`'s constraint allows next, from the chain of that constraint alone (every
    sampler stage off); None without a constraint."""
    if config.constraint is None:
        return None
    alone = config.with_(**{declared.name: declared.default for declared in all_settings()})
    return torch.isfinite(session.distribution(after_samplers=True, config=alone).logits)


def constraint_report(raw: Distribution, allowed: torch.Tensor) -> StageReport:
    """What the constraint stage does to the next token, as a step's StageReport says it (the stage is first:
    it sees the model's own distribution)."""
    return StageReport(
        "constraint",
        kept=int(allowed.sum()),
        removed_mass=float(raw.probs[~allowed].sum()),
        removed_top=not bool(allowed[raw.logits.argmax()]),
    )


@router.post("/sessions/{session_id}/distribution")
async def session_distribution(
    session_id: str, body: DistributionRequest, request: Request, secret: Secret = None
) -> dict:
    """A session's next-token distribution under `config` (and `greedy`), without changing the session: what a
    step would draw from. `probs` answers for `ids`; `after` lists the `top` most likely tokens."""
    app = _app(request)
    live = app.sessions.get(session_id, secret)
    async with app.runner.admit(), live.lock:
        return await app.runner.call(_session_distribution, live, body)


async def _prompt_ids(app, body) -> list[int]:
    """The request's prompt as ids, tokenized on the model thread."""
    return await app.runner.call(
        lambda: app.lm.prompt_ids(body.prompt_input(), chat=body.is_chat(), system=getattr(body, "system", None))
    )


@router.post("/trace", responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}})
async def trace(body: TraceRequest, request: Request) -> EventStream:
    """Every Step record of a generation as it happens (`event: step`), then `event: result` per row."""
    app = _app(request)
    lm, runner = app.lm, app.runner
    config = make_generation_config(body.config)

    def prepare() -> Generation:  # on the model thread
        ids = lm.prompt_ids(body.prompt_input(), chat=body.is_chat(), system=getattr(body, "system", None))
        return Generation(lm.decoder, ids, config, body.n, prefill_chunk=app.limits.prefill_chunk)

    ticket = runner.reserve()  # 429 now, before the stream starts
    try:  # a bad request is a 4xx, before the stream starts
        generation = await runner.call(prepare)
        ticket.claim(*kv_cost(body.n, len(generation.prompt_ids), config.max_new_tokens, lm.context_length))
        steps = await runner.start(generation.work(), rows=body.n)
    except BaseException as error:
        ticket.end_for(error)
        raise

    async def frames():
        try:
            async with contextlib.aclosing(steps):
                async for item in steps:
                    yield event(item.to_dict(), "step")
            ticket.end("completed")  # done: the slot is free before the client reads the last frames
            for result in generation.results:
                yield event(result.to_dict(), "result")
        except Exception as error:  # the 200 is sent: report in-band
            ticket.end("failed")
            yield event(in_band_error(error), "error")

    return EventStream(frames(), on_close=ticket.closer(steps))


@router.post("/score")
async def score(body: ScoreRequest, request: Request) -> dict:
    app = _app(request)
    lm = app.lm
    # Every token holds at least one byte, beside a few specials: an upper bound without tokenizing.
    text_bytes = len(body.text.encode()) + len((body.prompt or "").encode()) + 4
    async with app.runner.admit() as ticket:
        ticket.claim(*kv_cost(1, min(text_bytes, lm.context_length), 0, lm.context_length))
        result = await app.runner.call(lambda: lm.score(body.text, body.prompt))
        return finite(result.to_dict())


@router.post("/beam")
async def beam(body: BeamRequest, request: Request) -> dict:
    app = _app(request)
    _check_beams(app, body.num_beams, "num_beams")
    async with app.runner.admit() as ticket:
        ids = await _prompt_ids(app, body)
        ticket.claim(*kv_cost(body.num_beams, len(ids), body.max_new_tokens, app.lm.context_length))
        result = await app.runner.call(
            lambda: app.lm.beam_search(
                ids, num_beams=body.num_beams, max_new_tokens=body.max_new_tokens, length_penalty=body.length_penalty
            )
        )
        return finite(result.to_dict())


def _check_beams(app, beams: int, where: str) -> None:
    if beams > app.limits.max_beams:
        raise APIError(
            400,
            f"{where} is {beams} and this server runs at most {app.limits.max_beams} beams "
            "(decodelab serve --max-beams): ask for fewer",
            param=where,
        )


@router.post("/compare")
async def compare(body: CompareRequest, request: Request) -> dict:
    from decodelab.compare import compare as run_compare
    from decodelab.compare import parse_strategies

    app = _app(request)
    strategies = parse_strategies(body.strategies)
    if len(strategies) > app.limits.max_strategies:
        raise APIError(
            400,
            f"strategies names {len(strategies)} strategies and this server compares at most "
            f"{app.limits.max_strategies} at once: send fewer",
            param="strategies",
        )
    rows = [strategy.options.get("num_beams", 1) for strategy in strategies]
    for strategy, beams in zip(strategies, rows):
        _check_beams(app, beams, f"strategy {strategy.label!r}")
    async with app.runner.admit() as ticket:
        ids = await _prompt_ids(app, body)
        ticket.claim(*kv_cost(max(rows), len(ids), body.max_new_tokens, app.lm.context_length))  # one at a time
        outcomes: Any = await app.runner.call(
            lambda: run_compare(app.lm, ids, strategies, seed=body.seed, max_new_tokens=body.max_new_tokens)
        )
        return finite({"outcomes": [outcome.to_dict() for outcome in outcomes]})
