"""`top_p`: nucleus sampling — keep the most likely tokens until their probability adds up to p."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class TopP(Stage):
    """Nucleus: keep the smallest set of most likely tokens whose probability adds up to at least p."""

    top_p: float = setting(
        kind="float",
        off=(None, 1.0),
        metavar="P",
        slider=(0.05, 1.0, 0.05),
        allowed="must be in (0, 1]",
        check=lambda value: is_number(value) and 0 < value <= 1,
        help="keep the most likely tokens until their mass reaches P (1 = off)",
    )
    name: ClassVar[str] = "top_p"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 80

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        # Sort ascending; drop the low tail whose cumulative mass stays within 1 - p; always keep the top token.
        sorted_logits, order = torch.sort(logits, descending=False)  # (B, V)
        tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= 1 - self.top_p
        drop_sorted[..., -1] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return logits.masked_fill(drop, FILTERED)
