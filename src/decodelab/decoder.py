"""`Decoder`: the narrow part of a loaded model that decoding reads — the backend that computes logits, the
tokenizer that turns an id into its bytes, and the ids that end a generation.

The generation loop, sessions, beam search and scoring take a `Decoder` (an `LM` hands out its own as
`lm.decoder`), so they depend on these three facts and nothing else of the model. Their public entry points
accept either: `as_decoder(lm_or_decoder)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import torch

from decodelab.backends.base import Backend
from decodelab.chat import detect_stop_ids
from decodelab.tokenizer import Tokenizer


@dataclass(frozen=True)
class Decoder:
    backend: Backend  # computes logits, with a KV cache
    tokenizer: Tokenizer  # ids <-> text, each token's bytes and specialness
    eos_ids: tuple[int, ...] = ()  # end-of-sequence ids named by the model and generation configs

    @property
    def context_length(self) -> int:
        return self.backend.context_length

    @property
    def vocab_size(self) -> int:
        return self.backend.vocab_size

    @property
    def device(self) -> torch.device:
        return self.backend.device

    def stop_ids(self, stop_strings: Iterable[str] = (), token_ids: Iterable[int] | None = None) -> frozenset[int]:
        """The ids that end a generation: `token_ids` when a config names them; otherwise the eos ids, the chat
        template's end-of-turn markers and the stop strings that are one special token each."""
        if token_ids is not None:
            return frozenset(token_ids)
        return detect_stop_ids(self.tokenizer, self.eos_ids, stop_strings)


class HasDecoder(Protocol):
    """Anything that hands out a `Decoder`, as `decodelab.LM` does."""

    @property
    def decoder(self) -> Decoder: ...


def as_decoder(source: Decoder | HasDecoder) -> Decoder:
    """`source` itself when it is a `Decoder`, else its `.decoder` (an `LM`'s)."""
    return source if isinstance(source, Decoder) else source.decoder
