"""`min_p`: keep tokens at least min_p times as likely as the most likely one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class MinP(Stage):
    """Keep tokens whose probability is at least min_p times the top token's probability."""

    min_p: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="P",
        slider=(0.0, 0.5, 0.01),
        allowed="must be in [0, 1]",
        check=lambda value: is_number(value) and 0 <= value <= 1,
        help="keep tokens with p >= P * p(most likely token) (0 = off)",
    )
    name: ClassVar[str] = "min_p"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 90

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        probs = logits.softmax(dim=-1)  # (B, V)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        drop = drop.scatter(-1, probs.argmax(dim=-1, keepdim=True), False)  # the top token always stays
        return logits.masked_fill(drop, FILTERED)
