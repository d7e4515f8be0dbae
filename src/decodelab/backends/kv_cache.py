"""`LayerKVCache`: the keys and values of every attention layer, kept in (B, H, capacity, D) buffers that are
filled up to `length` and written in place; the base of decodelab's own caches (the native Llama's and the
tiny GPT's), which differ only in how their buffers make room.

Every operation the `Cache` contract names is a cheap move here: `crop` only lowers `length` (later appends
overwrite the rest), `reorder` index-selects the batch rows, `fork` copies the buffers; `take_row` copies one
row of another cache in.
"""

from __future__ import annotations

import copy
from typing import Self

import torch
import torch.nn.functional as F

from decodelab.backends.base import Cache
from decodelab.errors import Unsupported


class LayerKVCache:
    """Per-layer key and value buffers, (B, H, capacity, D) each, holding positions [0, length)."""

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor]):
        self.length = 0  # positions filled
        self.keys, self.values = keys, values

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, H, T, D) new keys/values of `layer` at positions [length, length+T); return all so far,
        (B, H, length+T, D) each. `advance` moves `length` on once every layer has appended."""
        start, new = self.length, k.shape[2]
        self._make_room(layer, start + new)
        keys, values = self.keys[layer], self.values[layer]
        keys.narrow(2, start, new).copy_(k)
        values.narrow(2, start, new).copy_(v)
        return keys.narrow(2, 0, start + new), values.narrow(2, 0, start + new)

    def _make_room(self, layer: int, needed: int) -> None:
        """Make `layer`'s buffers hold at least `needed` positions; fixed-size buffers already do."""

    def reserve(self, needed: int) -> None:
        """Make every layer's buffers hold at least `needed` positions (before a step that writes in place)."""
        for layer in range(len(self.keys)):
            self._make_room(layer, needed)

    def advance(self, new_positions: int) -> None:
        self.length += new_positions

    def crop(self, length: int) -> None:
        """Forget positions from `length` on (undo); the buffers keep their size and are overwritten later."""
        self.length = min(self.length, length)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (e.g. surviving beams), in that order."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    def fork(self) -> Self:
        """An independent copy of the buffers and the length."""
        return copy.deepcopy(self)

    def take_row(self, other: LayerKVCache, row: int, length: int) -> None:
        """Hold a copy of `other`'s batch row `row`, positions [0, length), in place of what this held (one row,
        empty before: a prompt prefilled in a padded batch handing each prompt its own cache)."""
        self.reserve(length)
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            for layer, buffer in enumerate(mine):  # (1, H, capacity, D) <- (1, H, length, D)
                buffer.narrow(2, 0, length).copy_(theirs[layer][row : row + 1, :, :length])
        self.length = length


def layer_cache(cache: Cache | None, backend: str) -> LayerKVCache | None:
    """`cache` as the `LayerKVCache` decodelab's own models write into; another kind is one clear error."""
    if cache is None or isinstance(cache, LayerKVCache):
        return cache
    raise Unsupported(f"the {backend} backend runs on the cache its new_cache() makes, got a {type(cache).__name__}")


class StaticSlots:
    """One layer's KV buffers as a compiled decode step sees them: fixed-size (B, H, S, D) tensors that `append`
    writes at explicit `positions` (T,) and hands back whole; the step masks the positions not yet written."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, positions: torch.Tensor):
        self.keys, self.values, self.positions = keys, values, positions

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write (B, H, T, D) keys/values at `positions`; return the whole buffers, (B, H, S, D). The buffers are
        this layer's already, so `layer` is not read: every layer then compiles to the same graph."""
        self.keys.index_copy_(2, self.positions, k)
        self.values.index_copy_(2, self.positions, v)
        return self.keys, self.values


class CacheGroups:
    """Several caches' rows stepped together, one new position each: batch rows [start_i, start_i + B_i) continue
    `caches[i]` at its own length. The model runs its matmuls over all rows at once and hands each layer's
    attention here, which runs it per cache exactly as that cache's own one-token step would."""

    def __init__(self, caches: list[LayerKVCache], sizes: list[int]):
        self.caches = caches
        self.sizes = sizes  # B_i, rows of each cache
        starts = [sum(sizes[:index]) for index in range(len(sizes))]
        self.slices = [slice(start, start + size) for start, size in zip(starts, sizes)]

    def positions(self, device: torch.device) -> torch.Tensor:
        """(B,) the position each row's new token takes: its cache's length."""
        lengths = [cache.length for cache, size in zip(self.caches, self.sizes) for _ in range(size)]
        return torch.tensor(lengths, device=device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **attention) -> torch.Tensor:
        """Append each cache's rows of k, v (B, Hkv, 1, D) to it and attend its rows of q (B, H, 1, D) over what it
        holds (`attention`: scaled_dot_product_attention's options); returns (B, H, 1, D)."""
        outs = []
        for cache, rows in zip(self.caches, self.slices):
            keys, values = cache.append(layer, k[rows], v[rows])  # (B_i, Hkv, length + 1, D)
            outs.append(F.scaled_dot_product_attention(q[rows], keys, values, **attention))
        return torch.cat(outs)

    def advance(self) -> None:
        for cache in self.caches:
            cache.advance(1)
