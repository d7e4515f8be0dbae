"""`repetition_penalty`: make every token already in the sequence (prompt included) less likely (CTRL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import MAX_PENALTY, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class RepetitionPenalty(Stage):
    """Divide positive (multiply negative) logits of every token already in the sequence (CTRL; transformers)."""

    repetition_penalty: float = setting(
        kind="float",
        off=(None, 1.0),
        metavar="R",
        slider=(1.0, 2.0, 0.05),
        allowed=f"must be in [{1 / MAX_PENALTY:g}, {MAX_PENALTY:g}]",
        check=lambda value: is_number(value) and 1 / MAX_PENALTY <= value <= MAX_PENALTY,
        help="> 1 discourages any token already in the prompt or output (1 = off)",
    )
    name: ClassVar[str] = "repetition_penalty"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 20

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        seen = logits.gather(1, history.ids)  # (B, T)
        penalized = torch.where(seen < 0, seen * self.repetition_penalty, seen / self.repetition_penalty)
        return logits.scatter(1, history.ids, penalized)
