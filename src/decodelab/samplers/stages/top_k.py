"""`top_k`: keep the k most likely tokens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_whole, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class TopK(Stage):
    """Keep the k most likely tokens (ties with the k-th are kept, as in transformers)."""

    top_k: int = setting(
        kind="int",
        off=(None, 0),
        metavar="K",
        slider=(0, 100, 1),
        allowed="must be a whole number >= 1 (0 or unset keeps every token)",
        check=lambda value: is_whole(value) and value >= 1,
        help="keep the K most likely tokens (0 = off)",
    )
    name: ClassVar[str] = "top_k"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 70

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        kth = torch.topk(logits, min(self.top_k, logits.shape[-1])).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, FILTERED)
