"""`typical_p`: locally typical sampling — keep the tokens whose surprisal is closest to the entropy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class TypicalP(Stage):
    """Locally typical sampling: keep tokens whose surprisal is closest to the entropy, up to mass p."""

    typical_p: float = setting(
        kind="float",
        off=(None, 1.0),
        metavar="P",
        slider=(0.05, 1.0, 0.05),
        allowed="must be in (0, 1]",
        check=lambda value: is_number(value) and 0 < value <= 1,
        help="keep the tokens whose surprisal is closest to the entropy, up to mass P (1 = off)",
    )
    name: ClassVar[str] = "typical_p"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 100

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        logprobs = logits.log_softmax(dim=-1)  # (B, V)
        entropy = -(logprobs * logprobs.exp()).nansum(-1, keepdim=True)  # (B, 1)
        # Order tokens by |surprisal - entropy|, then keep them until their mass reaches `typical_p`.
        distance, order = torch.sort((-logprobs - entropy).abs(), descending=False)
        mass_so_far = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (mass_so_far < self.typical_p).sum(dim=1).clamp(max=distance.shape[-1] - 1)
        drop_sorted = distance > distance.gather(1, last.view(-1, 1))
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return logits.masked_fill(drop, FILTERED)
