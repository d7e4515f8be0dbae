"""`logprobs` in the two shapes OpenAI's API uses, for generated tokens (Steps) and echoed prompt tokens.

Each token first becomes a `TokenLogprob`: its bytes, its log-probability under the model's own distribution
(`Step.logprob`; a scored prompt token's `PromptLogprob.logprob`), and the most likely tokens at its position.
The prompt's first token has no logprob: nothing predicts it (`null`, as in OpenAI's and vLLM's echo).

A token's text is written as OpenAI writes it: its characters, or `bytes:\\xec\\x95` when its bytes are only
part of a UTF-8 character (a Korean syllable split over tokens). The exact bytes are always in `bytes`.
"""

from __future__ import annotations

import builtins
import codecs
import math
from dataclasses import dataclass

from decodelab.prompt_logprobs import PromptLogprob
from decodelab.records import Alternative, Step

IMPOSSIBLE = -9999.0  # OpenAI's stand-in for log(0)


def _log(prob: float) -> float:
    return math.log(prob) if prob > 0 else IMPOSSIBLE


def token_text(raw: bytes) -> str:
    """OpenAI's text of a token: 'Paris', or 'bytes:\\xec\\x95' for bytes that are not whole characters."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


@dataclass(frozen=True)
class TokenLogprob:
    """One token's entry in a `logprobs` answer."""

    bytes: builtins.bytes
    logprob: float | None  # None: the prompt's first token, which nothing predicts
    top: tuple[Alternate, ...] | None  # the most likely tokens there, best first
    id: int = -1  # the token's id

    @classmethod
    def of_step(cls, step: Step, top: int) -> TokenLogprob:
        """A generated token: its raw logprob, and its step's most likely raw alternatives."""
        return cls(step.bytes, step.logprob, _top(step.raw_top[:top], step.token_id, step.logprob), step.token_id)

    @classmethod
    def of_prompt(cls, raw: builtins.bytes, token_id: int, scored: PromptLogprob | None, top: int) -> TokenLogprob:
        """An echoed prompt token, scored given the prompt before it (`scored` None: the first token)."""
        if scored is None:
            return cls(raw, None, None, token_id)
        return cls(raw, scored.logprob, _top(scored.alternatives[:top], scored.id, scored.logprob), token_id)


Alternate = tuple[builtins.bytes, float, int]  # (bytes, logprob, id) of one of the most likely tokens


def _top(alternatives: tuple[Alternative, ...] | list[Alternative], chosen_id: int, chosen_logprob: float):
    """(bytes, logprob, id) triples; the chosen token's logprob is exactly its own (not exp then log of its prob)."""
    return tuple((alt.bytes, chosen_logprob if alt.id == chosen_id else _log(alt.prob), alt.id) for alt in alternatives)


def written(raw: builtins.bytes, token_id: int, as_ids: bool) -> str:
    """A token as a logprobs answer writes it: its text (`token_text`), or vLLM's `token_id:123` when the
    request asked for `return_tokens_as_token_ids` (lossless: what decodelab's remote backend asks for)."""
    return f"token_id:{token_id}" if as_ids else token_text(raw)


class TextOffsets:
    """Where each token starts in a choice's text, in characters: what was decoded before it. (A token that
    only holds part of a character starts where that character will.)"""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._length = 0

    def add(self, raw: bytes) -> int:
        start = self._length
        self._length += len(self._decoder.decode(raw))
        return start


def completion_logprobs(entries: list[TokenLogprob], top: int, offsets: TextOffsets, as_ids: bool = False) -> dict:
    """The legacy shape: parallel lists; `top_logprobs` holds up to top + 1 entries, the chosen token always."""
    tops: list[dict | None] = []
    for entry in entries:
        if entry.top is None:
            tops.append(None)
            continue
        alternatives = {written(raw, token_id, as_ids): logprob for raw, logprob, token_id in entry.top}
        if top and entry.logprob is not None:
            alternatives.setdefault(written(entry.bytes, entry.id, as_ids), entry.logprob)
        tops.append(alternatives)
    return {
        "tokens": [written(entry.bytes, entry.id, as_ids) for entry in entries],
        "token_logprobs": [entry.logprob for entry in entries],
        "top_logprobs": tops,
        "text_offset": [offsets.add(entry.bytes) for entry in entries],
    }


def chat_logprobs(entries: list[TokenLogprob], as_ids: bool = False) -> dict:
    """The chat shape: one entry per token, each with its bytes and its alternatives."""
    return {
        "content": [
            {
                "token": written(entry.bytes, entry.id, as_ids),
                "logprob": entry.logprob,
                "bytes": list(entry.bytes),
                "top_logprobs": [
                    {"token": written(raw, token_id, as_ids), "logprob": logprob, "bytes": list(raw)}
                    for raw, logprob, token_id in entry.top or ()
                ],
            }
            for entry in entries
        ],
        "refusal": None,
    }
