"""The tiny GPT's KV cache: a `LayerKVCache`, like the native Llama's, so the engine, sessions and beam search
drive it unchanged (append, advance, crop, reorder and fork are the shared base's).

A tiny GPT's context is short (its learned position embedding covers `block_size` positions), so the buffers
are allocated at full size once instead of growing.
"""

from __future__ import annotations

import torch

from decodelab.backends.kv_cache import LayerKVCache
from decodelab.tinygpt.config import TinyGPTConfig


class KVCache(LayerKVCache):
    """Keys and values of every layer for the positions seen so far, written in place."""

    def __init__(self, config: TinyGPTConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        shape = (batch_size, config.n_head, config.block_size, config.head_dim)  # (B, H, block_size, D)
        super().__init__(
            [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)],
            [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)],
        )

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]
