"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions.

Output comes from decodelab's own traced loop, so `logprobs` are the model's log-probabilities recorded in
each Step (`Step.logprob`, and `Step.raw_top` for `top_logprobs`), and `seed` reproduces a request exactly
(choice i of n uses seed + i). A stop token ends a choice and is counted in `usage` but is not part of the
text; legacy completions list it in `logprobs` (as vLLM does: one entry per generated token), chat does not
(as OpenAI's chat does not). A fast mode is never silent: each model object carries
`decodelab.mode` (`ComputeMode.to_dict()`), and `system_fingerprint` names the mode unless it is the exact one.

/v1/completions takes several prompts in one request (each runs as its own task of the batching scheduler, so
they share its steps), and `echo` with `max_tokens` 0 or more: the prompt's logprobs come from
`decodelab.scoring`, as `lm.score` computes them (what lm-evaluation-harness's loglikelihood tasks read).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from decodelab.constraints import Constraint
from decodelab.engine import Generation
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.prompt_logprobs import PromptLogprob, prompt_scoring
from decodelab.server.errors import ERROR_RESPONSES, APIError
from decodelab.server.limits import MAX_CONSTRAINT_CHARS, kv_cost
from decodelab.server.openai_logprobs import TokenLogprob
from decodelab.server.openai_reply import Part, Reply
from decodelab.server.openai_schemas import MAX_PROMPTS, ChatRequest, CompletionRequest, SamplingRequest
from decodelab.server.runner import TaskStream, merged
from decodelab.server.sse import STREAM_RESPONSE, EventStream, finite
from decodelab.server.tool_calls import ToolPlan, plan_tools

if TYPE_CHECKING:
    from decodelab.model import LM
    from decodelab.server.app import ServerState
    from decodelab.server.runner import Runner

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
DEFAULT_CHAT_MAX_TOKENS = 1024  # when a chat request names no limit (OpenAI's is the whole context)
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's default for /v1/completions (less when the context is shorter)
DISCONNECT_CHECK_EVERY = 8  # steps between checks that a non-streaming client is still there


def _app(request: Request) -> ServerState:
    return request.app.state.decodelab


def served_names(lm: LM) -> list[str]:
    return [lm.name]


def model_object(lm: LM, name: str) -> dict:
    """OpenAI's model object, plus decodelab's own field: how the model computes (dtype, quantization, compiled)."""
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "decodelab",
        "decodelab": {"mode": lm.mode.to_dict()},
    }


@router.get("/models")
async def list_models(request: Request) -> dict:
    lm = _app(request).lm
    return {"object": "list", "data": [model_object(lm, name) for name in served_names(lm)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    lm = _app(request).lm
    check_model(lm, model_id)
    return model_object(lm, model_id)


def check_model(lm: LM, name: str) -> None:
    if name not in served_names(lm):
        raise APIError(
            404,
            f"the model {name!r} does not exist here: this server serves {lm.name!r} (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )


def _max_tokens(lm: LM, requested: int | None, prompt_length: int, default: int) -> int:
    if requested == 0:
        return 0  # score only: the prompt may fill the whole context
    room = lm.context_length - prompt_length
    if room <= 0:
        raise APIError(
            400, f"the prompt is {prompt_length} tokens and {lm.name} reads at most {lm.context_length}: shorten it"
        )
    if requested is None:
        return min(room, default)
    if requested > room:
        raise APIError(
            400,
            f"max_tokens is {requested} but the prompt has {prompt_length} tokens and {lm.name} "
            f"reads at most {lm.context_length}: ask for at most {room}",
            param="max_tokens",
        )
    return requested


def _config(
    body: SamplingRequest, max_tokens: int, top_logprobs: int, seed: int, constraint: Constraint | None
) -> GenerationConfig:
    return GenerationConfig.from_dict(
        {
            **body.sampler_settings(),
            "max_new_tokens": max_tokens,
            "stop": tuple(body.stop or ()),
            "seed": seed,
            "top_n": top_logprobs,
            "trace": top_logprobs > 0,
            "constraint": constraint,
        }
    )


def _output_constraint(body: SamplingRequest, tools: ToolPlan | None = None) -> Constraint | None:
    """What the output must match: `response_format`, `structured_outputs` or a forced tool call, at most one
    (compiled here, off the event loop and the model thread: a schema's check takes milliseconds, a big one
    longer). A bad schema or pattern is a 400 naming its field."""
    asked: list[tuple[str, Constraint]] = []
    for field, source in (
        ("response_format", body.response_format),
        ("structured_outputs", body.structured_outputs),
        ("tools", tools if tools is not None and tools.forced else None),
    ):
        try:
            constraint = source.constraint() if source is not None else None
        except BadInput as error:
            raise APIError(400, str(error), param=field) from None
        if constraint is not None and len(constraint.source) > MAX_CONSTRAINT_CHARS:
            raise APIError(
                400,
                f"the {field} constraint is {len(constraint.source)} characters; this server takes at most "
                f"{MAX_CONSTRAINT_CHARS}: send a smaller schema or pattern",
                param=field,
            )
        if constraint is not None:
            asked.append((field, constraint))
    if len(asked) > 1:
        (first, _), (second, _) = asked[:2]
        which = "tool_choice forcing a call" if second == "tools" else second
        raise APIError(400, f"{first} and {which} both constrain the output: send one of them", param=first)
    return asked[0][1] if asked else None


# --- the two routes ---------------------------------------------------------------------------------------------


@router.post("/completions", responses=STREAM_RESPONSE)
async def completions(body: CompletionRequest, request: Request):
    app = _app(request)
    check_model(app.lm, body.model)
    if body.suffix:
        raise APIError(400, "suffix (insertion) is not supported by decodelab", param="suffix")
    if body.best_of not in (None, body.n):
        raise APIError(400, "best_of is not supported: use n to get several completions", param="best_of")
    if body.max_tokens == 0 and not body.echo:
        raise APIError(
            400,
            "max_tokens 0 generates nothing: send echo=true to get the prompt's logprobs, or ask for 1 or more",
            param="max_tokens",
        )
    prompts = body.prompts()
    if len(prompts) > MAX_PROMPTS:
        raise APIError(400, f"send at most {MAX_PROMPTS} prompts per request, got {len(prompts)}", param="prompt")
    for index, prompt in enumerate(prompts):
        if prompt == "" or prompt == []:
            where = f"prompt[{index}]" if len(prompts) > 1 else "prompt"
            raise APIError(400, f"{where} is empty: give some text for the model to continue", param="prompt")
    constraint = await asyncio.to_thread(_output_constraint, body)
    return await _run(
        request,
        app,
        body,
        prompts,
        constraint=constraint,
        chat=False,
        requested=body.max_tokens,
        default=DEFAULT_COMPLETION_MAX_TOKENS,
        top=body.logprobs if body.logprobs is not None else None,
        kind="text_completion",
        echo=body.echo,
    )


@router.post("/chat/completions", responses=STREAM_RESPONSE)
async def chat_completions(body: ChatRequest, request: Request):
    app = _app(request)
    check_model(app.lm, body.model)
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    tools = plan_tools(body, app.lm.tokenizer)
    constraint = await asyncio.to_thread(_output_constraint, body, tools)
    messages = [message.for_template() for message in body.messages]
    return await _run(
        request,
        app,
        body,
        [messages],
        constraint=constraint,
        tools=tools,
        chat=True,
        requested=body.max_completion_tokens or body.max_tokens,
        default=DEFAULT_CHAT_MAX_TOKENS,
        top=(body.top_logprobs or 0) if body.logprobs else None,
        kind="chat.completion",
    )


async def _run(
    request: Request,
    app: ServerState,
    body: SamplingRequest,
    prompts: list[Any],
    *,
    constraint: Constraint | None,
    tools: ToolPlan | None = None,
    chat: bool,
    requested: int | None,
    default: int,
    top: int | None,
    kind: str,
    echo: bool = False,
):
    """Answer `prompts` (`n` choices each): tokenize, claim their KV cache, score what is echoed, generate."""
    lm, runner, n = app.lm, app.runner, body.n
    seed = body.seed if body.seed is not None else secrets.randbits(31)

    def prepare() -> list[Part]:  # on the model thread: tokenizing a long prompt takes a while
        parts = []
        for index, prompt in enumerate(prompts):
            try:
                ids = lm.prompt_ids(prompt, chat=chat, tools=list(tools.template_tools) if tools else None)
            except BadInput as error:
                raise BadInput(f"prompt[{index}]: {error}" if len(prompts) > 1 else str(error)) from None
            max_tokens, generation = _max_tokens(lm, requested, len(ids), default), None
            if max_tokens > 0:
                config = _config(body, max_tokens, top or 0, seed, constraint)
                scored = top if echo else None  # an echoed prompt's logprobs come from the generation's prefill
                generation = Generation(
                    lm.decoder, ids, config, n, prefill_chunk=app.limits.prefill_chunk, prompt_logprobs=scored
                )
            echo_text = (prompt if isinstance(prompt, str) else lm.tokenizer.decode(ids)) if echo else ""
            parts.append(Part(ids, generation, echo_text))
        return parts

    ticket = runner.reserve()  # 429 before any work
    streams: list[TaskStream] = []
    try:  # errors here are 4xx, even for a stream
        parts = await runner.call(prepare)
        costs = [_kv_cost(part, n, lm.context_length) for part in parts]
        ticket.claim(sum(tokens for tokens, _ in costs), " + ".join(cost for _, cost in costs))
        streams = await _start(runner, parts, n)
        if echo and top is not None:
            await _score_echoes(runner, lm, parts, top, app.limits.prefill_chunk)
    except BaseException as error:
        for stream in streams:
            stream.close()
        ticket.end_for(error)
        raise
    reply = Reply(lm, parts, n, kind, top, tools, as_ids=body.return_tokens_as_token_ids)
    steps = merged(streams)
    if body.stream:
        options = body.stream_options
        include_usage = options is not None and options.include_usage
        continuous = options is not None and options.continuous_usage_stats
        return EventStream(reply.stream(steps, ticket, include_usage, continuous), on_close=ticket.closer(*streams))
    try:
        count = 0
        async with contextlib.aclosing(steps):
            async for _ in steps:
                count += 1
                if count % DISCONNECT_CHECK_EVERY == 0 and await request.is_disconnected():
                    ticket.end("cancelled")  # nobody to answer; closing the streams cancels the generations
                    return None
        ticket.end("completed")
        return finite(reply.complete())
    except BaseException as error:
        ticket.end_for(error)
        raise
    finally:
        for stream in streams:
            stream.close()


def _kv_cost(part: Part, n: int, context_length: int) -> tuple[int, str]:
    """The KV cache a part holds: its generation's rows, or the one row that scores an echoed prompt."""
    if part.generation is None:
        return kv_cost(1, len(part.ids), 0, context_length)
    return kv_cost(n, len(part.ids), part.generation.config.max_new_tokens, context_length)


async def _score_echoes(runner: Runner, lm: LM, parts: list[Part], top: int, chunk: int) -> None:
    """Each part's prompt tokens with their logprobs given the tokens before them (the first has none): read from
    its generation's prefill (started already), or, for a part that generates nothing, from a prefill of its own
    run as a scheduler task. The scheduler prefills scored prompts that arrive together as one batch."""

    async def scores_of(part: Part) -> list[PromptLogprob]:
        if part.generation is not None:
            return part.generation.prompt_scores
        stream = await runner.start(prompt_scoring(lm.decoder, part.ids, top, chunk))
        async with contextlib.aclosing(stream):
            return [output async for output in stream][-1]

    for part, scores in zip(parts, await asyncio.gather(*(scores_of(part) for part in parts))):
        raw = [lm.tokenizer.token_bytes(token_id) for token_id in part.ids]
        part.echoed = [TokenLogprob.of_prompt(raw[0], part.ids[0], None, top)]
        part.echoed += [
            TokenLogprob.of_prompt(raw[i + 1], part.ids[i + 1], token, top) for i, token in enumerate(scores)
        ]


async def _start(runner: Runner, parts: list[Part], n: int) -> list[TaskStream]:
    """Every part's generation as a task of the scheduler, started together (so they batch); all or none."""
    generating = [part.generation for part in parts if part.generation is not None]
    started = await asyncio.gather(
        *(runner.start(generation.work(), rows=n) for generation in generating), return_exceptions=True
    )
    streams = [stream for stream in started if isinstance(stream, TaskStream)]
    failed = [error for error in started if isinstance(error, BaseException)]
    if failed:
        for stream in streams:
            stream.close()
        raise failed[0]
    return streams
