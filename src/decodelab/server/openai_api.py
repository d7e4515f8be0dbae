"""OpenAI-compatible routes: GET /v1/models, POST /v1/completions, POST /v1/chat/completions.

Output comes from decodelab's own traced loop, so `logprobs` are the model's log-probabilities recorded in
each Step (`Step.logprob`, and `Step.raw_top` for `top_logprobs`), and `seed` reproduces a request exactly
(choice i of n uses seed + i). A stop token ends a choice and is counted in `usage` but, as with OpenAI, is
not part of the text or the logprobs. A fast mode is never silent: each model object carries
`decodelab.mode` (`ComputeMode.to_dict()`), and `system_fingerprint` names the mode unless it is the exact one.
"""

from __future__ import annotations

import codecs
import contextlib
import math
import secrets
import time
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request

from decodelab.engine import Generation
from decodelab.generation_config import GenerationConfig
from decodelab.records import Alternative, Result, Step, StopReason
from decodelab.server.errors import ERROR_RESPONSES, APIError, in_band_error
from decodelab.server.limits import kv_cost
from decodelab.server.openai_schemas import ChatRequest, CompletionRequest, SamplingRequest
from decodelab.server.sse import STREAM_RESPONSE, EventStream, event, finite

if TYPE_CHECKING:
    from decodelab.model import LM
    from decodelab.server.app import ServerState
    from decodelab.server.runner import TaskStream, Ticket

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


def system_fingerprint(lm: LM) -> str:
    """'decodelab-0.1.0' on the exact path; a fast mode adds itself: 'decodelab-0.1.0-float32-int8-compiled'."""
    from decodelab import __version__

    mode = lm.mode
    if mode.exact:
        return f"decodelab-{__version__}"
    parts = [f"decodelab-{__version__}", mode.dtype]
    if mode.quantization != "none":
        parts.append(mode.quantization)
    if mode.compiled:
        parts.append("compiled")
    return "-".join(parts)


@router.get("/models")
async def list_models(request: Request) -> dict:
    lm = _app(request).lm
    return {"object": "list", "data": [model_object(lm, name) for name in served_names(lm)]}


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, request: Request) -> dict:
    lm = _app(request).lm
    _check_model(lm, model_id)
    return model_object(lm, model_id)


def _check_model(lm: LM, name: str) -> None:
    if name not in served_names(lm):
        raise APIError(
            404,
            f"the model {name!r} does not exist here: this server serves {lm.name!r} (see GET /v1/models)",
            param="model",
            code="model_not_found",
        )


def _finish_reason(reason: StopReason) -> str:
    return "stop" if reason.kind in ("stop_token", "stop_string") else "length"


def _max_tokens(lm: LM, requested: int | None, prompt_length: int, default: int) -> int:
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


def _config(body: SamplingRequest, max_tokens: int, top_logprobs: int, seed: int) -> GenerationConfig:
    return GenerationConfig.from_dict(
        {
            **body.sampler_settings(),
            "max_new_tokens": max_tokens,
            "stop": tuple(body.stop or ()),
            "seed": seed,
            "top_n": top_logprobs,
            "trace": top_logprobs > 0,
        }
    )


# --- logprobs, in the two shapes OpenAI uses ---------------------------------------------------------------------


def _log(prob: float) -> float:
    return math.log(prob) if prob > 0 else -9999.0  # OpenAI's stand-in for log(0)


def _text_steps(steps: list[Step]) -> list[Step]:
    """The steps whose tokens are part of the text: all but a stop token that ended the choice."""
    return steps[:-1] if steps and steps[-1].is_stop else steps


def _alternative_logprob(step: Step, alternative: Alternative) -> float:
    """An alternative's log-probability; the chosen token's is exactly the step's own."""
    return step.logprob if alternative.id == step.token_id else _log(alternative.prob)


class TextOffsets:
    """Where each token starts in a choice's text, in characters: what was decoded before it. (A token that
    only holds part of a character starts where that character will.)"""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._length = 0

    def add(self, step: Step) -> int:
        start = self._length
        self._length += len(self._decoder.decode(step.bytes))
        return start


def completion_logprobs(steps: list[Step], top: int, offsets: list[int]) -> dict:
    """The legacy shape: parallel lists; `top_logprobs` holds up to top + 1 entries, the chosen token always."""
    tops = []
    for step in steps:
        entries = {alt.piece: _alternative_logprob(step, alt) for alt in step.raw_top[:top]}
        if top:
            entries.setdefault(step.piece, step.logprob)
        tops.append(entries)
    return {
        "tokens": [step.piece for step in steps],
        "token_logprobs": [step.logprob for step in steps],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def chat_logprobs(steps: list[Step], top: int) -> dict:
    """The chat shape: one entry per token, each with its bytes and its `top` alternatives."""
    return {
        "content": [
            {
                "token": step.piece,
                "logprob": step.logprob,
                "bytes": list(step.bytes),
                "top_logprobs": [
                    {"token": alt.piece, "logprob": _alternative_logprob(step, alt), "bytes": list(alt.bytes)}
                    for alt in step.raw_top[:top]
                ],
            }
            for step in steps
        ],
        "refusal": None,
    }


def _usage(prompt_length: int, results: list[Result]) -> dict:
    completion = sum(len(result.token_ids) for result in results)
    return {"prompt_tokens": prompt_length, "completion_tokens": completion, "total_tokens": prompt_length + completion}


# --- the two routes ---------------------------------------------------------------------------------------------


@router.post("/completions", responses=STREAM_RESPONSE)
async def completions(body: CompletionRequest, request: Request):
    app = _app(request)
    lm = app.lm
    _check_model(lm, body.model)
    if body.echo:
        raise APIError(400, "echo is not supported: send echo=false and prepend the prompt yourself", param="echo")
    if body.suffix:
        raise APIError(400, "suffix (insertion) is not supported by decodelab", param="suffix")
    if body.best_of not in (None, body.n):
        raise APIError(400, "best_of is not supported: use n to get several completions", param="best_of")
    prompt = _single_prompt(body.prompt)
    top = body.logprobs or 0
    return await _run(
        request,
        app,
        body,
        prompt,
        chat=False,
        requested=body.max_tokens,
        default=DEFAULT_COMPLETION_MAX_TOKENS,
        top=top,
        want_logprobs=body.logprobs is not None,
        kind="text_completion",
    )


def _single_prompt(prompt):
    """A prompt as text or ids; a list of several prompts is refused (send one request each)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise APIError(400, f"send one prompt per request (got {len(prompt)})", param="prompt")
        prompt = prompt[0]
    if prompt == "" or prompt == []:
        raise APIError(400, "prompt is empty: give some text for the model to continue", param="prompt")
    return prompt


@router.post("/chat/completions", responses=STREAM_RESPONSE)
async def chat_completions(body: ChatRequest, request: Request):
    app = _app(request)
    lm = app.lm
    _check_model(lm, body.model)
    if body.top_logprobs and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs")
    messages = [{"role": message.role, "content": message.text()} for message in body.messages]
    top = body.top_logprobs or 0
    return await _run(
        request,
        app,
        body,
        messages,
        chat=True,
        requested=body.max_completion_tokens or body.max_tokens,
        default=DEFAULT_CHAT_MAX_TOKENS,
        top=top,
        want_logprobs=body.logprobs,
        kind="chat.completion",
    )


async def _run(
    request: Request,
    app,
    body: SamplingRequest,
    prompt,
    *,
    chat: bool,
    requested: int | None,
    default: int,
    top: int,
    want_logprobs: bool,
    kind: str,
):
    lm, runner = app.lm, app.runner
    seed = body.seed if body.seed is not None else secrets.randbits(31)

    def prepare() -> Generation:  # on the model thread: tokenizing a long prompt takes a while
        prompt_ids = lm.prompt_ids(prompt, chat=chat)
        config = _config(body, _max_tokens(lm, requested, len(prompt_ids), default), top, seed)
        return Generation(lm.decoder, prompt_ids, config, body.n, prefill_chunk=app.limits.prefill_chunk)

    ticket = runner.reserve()  # 429 before any work
    try:  # errors here are 4xx, even for a stream
        generation = await runner.call(prepare)
        cost = kv_cost(body.n, len(generation.prompt_ids), generation.config.max_new_tokens, lm.context_length)
        ticket.claim(*cost)
        steps = await runner.start(generation.work(), rows=body.n)
    except BaseException as error:
        ticket.end_for(error)
        raise
    reply = Reply(lm, generation, kind, top if want_logprobs else None)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return EventStream(reply.stream(steps, usage, ticket), on_close=ticket.closer(steps))
    try:
        count = 0
        async with contextlib.aclosing(steps):
            async for _ in steps:
                count += 1
                if count % DISCONNECT_CHECK_EVERY == 0 and await request.is_disconnected():
                    ticket.end("cancelled")  # nobody to answer; closing the stream cancels the generation
                    return None
        ticket.end("completed")
        return finite(reply.complete())
    except BaseException as error:
        ticket.end_for(error)
        raise


class Reply:
    """Turns one Generation into OpenAI's response objects: whole, or as stream chunks."""

    def __init__(self, lm: LM, generation: Generation, kind: str, top_logprobs: int | None):
        self.lm, self.generation, self.kind, self.top = lm, generation, kind, top_logprobs
        self.chat = kind == "chat.completion"
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + secrets.token_urlsafe(18)
        self.created = int(time.time())
        self._offsets = [TextOffsets() for _ in range(generation.n)]  # per choice, for streamed text_offset

    def _envelope(self, choices: list[dict], chunk: bool = False) -> dict:
        return {
            "id": self.id,
            "object": self.kind + (".chunk" if chunk and self.chat else ""),
            "created": self.created,
            "model": self.lm.name,
            "system_fingerprint": system_fingerprint(self.lm),
            "choices": choices,
        }

    def _logprobs(self, steps: list[Step], offsets: TextOffsets) -> dict | None:
        if self.top is None:
            return None
        if self.chat:
            return chat_logprobs(steps, self.top)
        return completion_logprobs(steps, self.top, [offsets.add(step) for step in steps])

    def complete(self) -> dict:
        results = self.generation.results
        choices = []
        for row, result in enumerate(results):
            logprobs = self._logprobs(_text_steps(result.steps), TextOffsets())
            choice = {"index": row, "finish_reason": _finish_reason(result.stop_reason), "logprobs": logprobs}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": result.text, "refusal": None}
            else:
                choice["text"] = result.text
            choices.append(choice)
        return {**self._envelope(choices), "usage": _usage(len(self.generation.prompt_ids), results)}

    def _chunk(
        self, row: int, text: str | None, steps: list[Step], finish: str | None = None, role: bool = False
    ) -> str:
        logprobs = self._logprobs(steps, self._offsets[row]) if steps else None
        choice: dict = {"index": row, "logprobs": logprobs, "finish_reason": finish}
        if self.chat:
            choice["delta"] = (
                {"role": "assistant", "content": ""} if role else {} if text is None else {"content": text}
            )
        else:
            choice["text"] = text or ""
        return event(self._envelope([choice], chunk=True))

    async def stream(self, steps: TaskStream, include_usage: bool, ticket: Ticket):
        """The chunks; the ticket ends when the generation is over, before the last chunks are sent."""
        generation = self.generation
        shown = [0] * generation.n
        try:
            if self.chat:
                for row in range(generation.n):
                    yield self._chunk(row, None, [], role=True)
            async with contextlib.aclosing(steps):
                async for step in steps:
                    row = step.row
                    if step.is_stop:
                        continue  # the stop token is not part of the text
                    safe = generation.safe_text(row)
                    delta, shown[row] = safe[shown[row] :], max(shown[row], len(safe))
                    if delta or self.top is not None:
                        yield self._chunk(row, delta, [step])
            ticket.end("completed")
            for row, result in enumerate(generation.results):
                rest = result.text[shown[row] :]
                yield self._chunk(
                    row, rest if (rest or not self.chat) else None, [], finish=_finish_reason(result.stop_reason)
                )
            if include_usage:
                yield event(
                    {**self._envelope([], chunk=True), "usage": _usage(len(generation.prompt_ids), generation.results)}
                )
            yield event("[DONE]")
        except Exception as error:  # headers are sent: report in-band, as OpenAI does
            ticket.end("failed")
            yield event(in_band_error(error))
