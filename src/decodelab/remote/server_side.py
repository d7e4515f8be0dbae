"""Server-side sampling: the remote server writes the whole output in one request, with per-step logprobs.

    generate_on_server(lm, prompt, max_new_tokens=64, temperature=0, ...) -> Result

Faster than step-by-step mode (one request instead of one per token) and the only way on a server that takes no
token-id prompts (llama-cpp-python's: a prefix re-sent as text may tokenize differently). What it records is
less: each Step has the token, its logprob and the top k alternatives under the model's own distribution, but
not what the server's sampler made of them, so `prob` (after the samplers) and `entropy` are NaN and `stages`
is empty. Step-by-step mode (`lm.generate` on a remote model) runs decodelab's own chain instead.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

from decodelab.errors import BadInput
from decodelab.records import Alternative, Result, Step, StopReason
from decodelab.remote.backend import Position, RemoteBackend
from decodelab.tokens import readable_piece

if TYPE_CHECKING:
    from decodelab.model import LM, Prompt


def generate_on_server(
    lm: LM,
    prompt: Prompt,
    *,
    chat: bool = False,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: tuple[str, ...] = (),
) -> Result:
    """One completion on the server, recorded as a `Result` of Steps (see the module docstring)."""
    backend = lm.backend
    if not isinstance(backend, RemoteBackend):
        raise BadInput(f"generate_on_server needs a model on a server (decodelab.load('http://...')), got {lm.name}")
    ids = lm.prompt_ids(prompt, chat=chat)
    fields: dict[str, Any] = {"max_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    if seed is not None:
        fields["seed"] = seed
    if stop:
        fields["stop"] = list(stop)
    started = time.monotonic()
    choice = backend.complete(ids, **fields)
    positions = backend.read_logprobs(
        choice.get("logprobs") or {"tokens": [], "token_logprobs": [], "top_logprobs": []}
    )
    stop_ids = lm.stop_ids(stop)
    steps = [_step(lm, index, position, stop_ids) for index, position in enumerate(positions)]
    token_ids = [step.token_id for step in steps]
    ended = token_ids and token_ids[-1] in stop_ids
    reason = StopReason("stop_token", token_ids[-1]) if ended else _reason(choice.get("finish_reason"), stop)
    return Result(
        text=choice.get("text", ""),
        token_ids=token_ids,
        stop_reason=reason,
        steps=steps,
        prompt_ids=ids,
        seed=seed,
        elapsed=time.monotonic() - started,
    )


def _step(lm: LM, index: int, position: Position, stop_ids: frozenset[int]) -> Step:
    if position.token_id is None:
        raise BadInput(
            f"the server named token {index} of its output in a way that names no one token (part of a character?): "
            "use step-by-step mode (lm.generate) on a server that takes token-id prompts"
        )
    raw = lm.tokenizer.token_bytes(position.token_id)
    top = tuple(
        Alternative(
            token_id,
            readable_piece(lm.tokenizer.token_bytes(token_id)),
            math.exp(logprob),
            lm.tokenizer.token_bytes(token_id),
        )
        for token_id, logprob in sorted(position.top.items(), key=lambda item: -item[1])
    )
    logprob = position.logprob if position.logprob is not None else float("nan")
    better = sum(1 for alternative in top if alternative.prob > math.exp(logprob))
    return Step(
        index=index,
        token_id=position.token_id,
        piece=readable_piece(raw),
        prob=float("nan"),  # what the server's sampler made of the distribution is not told
        raw_prob=math.exp(logprob),
        logprob=logprob,
        rank=better + 1,  # within the reported tokens (a token outside them ranks after all of them)
        entropy=float("nan"),
        raw_top=top,
        bytes=raw,
        is_stop=position.token_id in stop_ids,
        special=lm.tokenizer.is_special(position.token_id),
    )


def _reason(finish: str | None, stop: tuple[str, ...]) -> StopReason:
    if finish == "stop":
        return (
            StopReason("stop_string", string=stop[0] if len(stop) == 1 else None) if stop else StopReason("stop_token")
        )
    return StopReason("max_new_tokens")
