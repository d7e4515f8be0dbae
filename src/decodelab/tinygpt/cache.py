"""The tiny GPT's KV cache: the same interface as the native Llama's (`length`, `append`, `advance`, `crop`,
`reorder`), so the engine, sessions and beam search drive it unchanged.

A tiny GPT's context is short (its learned position embedding covers `block_size` positions), so the buffers
are allocated at full size once instead of growing.
"""

from __future__ import annotations

import torch

from decodelab.tinygpt.config import TinyGPTConfig


class KVCache:
    """Keys and values of every layer for the positions seen so far, written in place."""

    def __init__(self, config: TinyGPTConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        self.length = 0  # positions filled
        shape = (batch_size, config.n_head, config.block_size, config.head_dim)  # (B, H, block_size, D)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(config.n_layer)]

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, D) new keys/values at positions [length, length+T); return all so far."""
        start, new = self.length, k.shape[2]
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, start : start + new] = k
        values[:, :, start : start + new] = v
        return keys[:, :, : start + new], values[:, :, : start + new]  # (B, H, length+T, D)

    def advance(self, new_positions: int) -> None:
        self.length += new_positions

    def crop(self, length: int) -> None:
        """Forget positions from `length` on (undo); later appends overwrite them."""
        self.length = min(self.length, length)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (e.g. surviving beams), in that order."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]
