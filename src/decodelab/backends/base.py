"""The contract every model backend meets (see the package docstring)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Backend(Protocol):
    vocab_size: int  # logits width V
    context_length: int  # most positions the model can attend over (prompt + generated)
    dtype: torch.dtype
    device: torch.device

    def new_cache(self, batch_size: int) -> Any:
        """An empty KV cache for `batch_size` rows, to pass to `forward`."""
        ...

    def forward(self, input_ids: torch.Tensor, cache: Any | None = None) -> torch.Tensor:
        """Logits for every position of `input_ids` (B, T) -> (B, T, V) float32.

        With a cache, the ids continue the sequence the cache holds and the cache is advanced in place;
        without one, the ids are the whole sequence.
        """
        ...
