"""A prompt's own logprobs, read from the forward that prefills it: each prompt token's logprob given the tokens
before it, and the most likely tokens there (what an OpenAI `echo` with `logprobs`, or vLLM's `prompt_logprobs`,
returns).

    scorer = PromptScorer(tokenizer, ids, top_n=5)
    logits = yield from prefill_chunks(backend, ids_tensor, cache, on_logits=scorer)   # one forward, both uses
    scorer.tokens                                   # [PromptLogprob] for ids[1:]; the first token has none

Unlike `decodelab.scoring` (the entropy and nucleus of every position, sliding windows past the context), this
keeps only what a prefill can give for free, so a generation can score its prompt without a second forward
(`Generation(prompt_logprobs=n)`) and a server can batch the prefills of many scored prompts.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch

from decodelab.decoder import Decoder
from decodelab.decoding import PREFILL_CHUNK, prefill_chunks, top_alternatives
from decodelab.records import Alternative
from decodelab.tokenizer import Tokenizer
from decodelab.work import Work


@dataclass(frozen=True)
class PromptLogprob:
    """One prompt token after the first, as the model saw it coming."""

    id: int
    logprob: float  # natural log of P(token | the prompt tokens before it)
    alternatives: tuple[Alternative, ...]  # the top_n most likely tokens at its position, most likely first


class PromptScorer:
    """Called with each prefill chunk's logits, collects `tokens`: a PromptLogprob for every id after the first."""

    def __init__(self, tokenizer: Tokenizer, ids: list[int], top_n: int):
        self.tokenizer, self.ids, self.top_n = tokenizer, ids, top_n
        self.tokens: list[PromptLogprob] = []

    def __call__(self, begin: int, logits: torch.Tensor) -> None:
        """`logits` (t, V) after ids[begin : begin + t]: row r predicts id begin + r + 1 (the prompt's last row
        predicts past it and is not a prompt token's)."""
        targets = self.ids[begin + 1 : begin + 1 + logits.shape[0]]
        if not targets:
            return
        logprobs = logits[: len(targets)].float().log_softmax(dim=-1)  # (t', V)
        chosen = logprobs.gather(1, torch.tensor(targets, device=logits.device)[:, None])[:, 0]  # (t',)
        for row, (token_id, logprob) in enumerate(zip(targets, chosen.tolist())):
            alternatives = top_alternatives(self.tokenizer, logprobs[row].exp(), self.top_n)
            self.tokens.append(PromptLogprob(token_id, logprob, alternatives))


def prompt_scoring(
    decoder: Decoder, ids: list[int], top_n: int, chunk: int | None = None
) -> Generator[Work | list[PromptLogprob], None, None]:
    """A loop for `decodelab.work`'s drivers (a server's scheduler): prefill `ids` on a fresh cache, then yield its
    prompt logprobs as one output. The cache is dropped with the loop."""
    scorer = PromptScorer(decoder.tokenizer, ids, top_n)
    ids_tensor = torch.tensor([ids], device=decoder.device)  # (1, T)
    yield from prefill_chunks(decoder.backend, ids_tensor, decoder.backend.new_cache(1), chunk or PREFILL_CHUNK, scorer)
    yield scorer.tokens
