"""A `TinyGPT` behind the `Backend` contract, so `decodelab.LM` (generate, next, score, beam, sessions, the
server) drives it exactly as it drives the transformers and native Llama models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch

from decodelab.backends.base import Cache
from decodelab.backends.kv_cache import LayerKVCache, layer_cache
from decodelab.tinygpt.cache import KVCache
from decodelab.tinygpt.model import TinyGPT


class TinyGPTBackend:
    """Wraps a TinyGPT for inference: no gradients, eval mode (no dropout), float32 logits."""

    def __init__(self, model: TinyGPT):
        self.model = model.eval()
        self.vocab_size: int = model.config.vocab_size
        self.context_length: int = model.config.block_size

    @property
    def dtype(self) -> torch.dtype:
        return self.model.wte.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.wte.weight.device

    def new_cache(self, batch_size: int) -> KVCache:
        return self.model.new_cache(batch_size)

    @torch.no_grad()
    def forward_groups(self, groups: Sequence[tuple[torch.Tensor, Cache]]) -> list[torch.Tensor]:
        """Several groups of rows, one new token each on its own cache, in one batched step (see `Backend`)."""
        own = [(tokens, cast(LayerKVCache, layer_cache(cache, "tiny GPT"))) for tokens, cache in groups]
        return [logits.float() for logits in self.model.forward_groups(own)]

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, last_only: bool = False) -> torch.Tensor:
        own = layer_cache(cache, "tiny GPT")
        return self.model(input_ids, own, last_only=last_only).float()  # (B, T, V), or (B, 1, V) with last_only
