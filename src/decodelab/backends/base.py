"""The contract every model backend meets (see the package docstring): the backend, and its KV cache."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Cache(Protocol):
    """A KV cache: `Backend.forward` advances it in place; decoding rearranges it between forwards.

    `crop` takes back positions (a session's undo), `reorder` picks and repeats batch rows (n samples of one
    prefilled prompt, surviving beams), `fork` copies it for an independent branch. decodelab's own caches
    share `decodelab.backends.kv_cache.LayerKVCache`; the transformers backend adapts transformers' cache.
    """

    @property
    def length(self) -> int:
        """Positions it holds."""
        ...

    def crop(self, length: int) -> None:
        """Forget every position from `length` on."""
        ...

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (B',), in that order; a row named twice is duplicated."""
        ...

    def fork(self) -> Cache:
        """An independent copy: advancing either leaves the other as it was."""
        ...


@runtime_checkable
class Backend(Protocol):
    vocab_size: int  # logits width V
    context_length: int  # most positions the model can attend over (prompt + generated)

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def new_cache(self, batch_size: int) -> Cache:
        """An empty KV cache for `batch_size` rows, to pass to `forward`."""
        ...

    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, last_only: bool = False) -> torch.Tensor:
        """Logits for every position of `input_ids` (B, T) -> (B, T, V) float32.

        With a cache, the ids continue the sequence the cache holds and the cache is advanced in place;
        without one, the ids are the whole sequence. With `last_only`, only the last position's logits
        (B, 1, V) are returned and the LM head runs on that position alone: a prefill needs no more, and
        T x V float32 logits of a long prompt are hundreds of MB (3000 x 49,152 x 4 bytes = 590 MB).
        """
        ...

    # Optional, for serving many requests at once (decodelab's own backends have it; see `decodelab.work`):
    #     forward_groups([(tokens (B_i, 1), cache_i), ...]) -> [(B_i, 1, V) float32 logits, ...]
    # one new token per row of several groups, each continuing its own cache at its own length, in one batched
    # step. A backend without it still serves: its groups run one `forward` each.
