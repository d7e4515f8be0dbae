"""`frequency_penalty`: OpenAI's penalty on tokens already generated (the prompt is not counted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import History, Stage, generated_counts, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class FrequencyPenalty(Stage):
    """Subtract a penalty times how often each token already appears in the *generated* text (OpenAI)."""

    frequency_penalty: float = setting(
        kind="float",
        off=(0.0,),
        slider=(-2.0, 2.0, 0.1),
        allowed="must be in [-2, 2]",
        check=lambda value: is_number(value) and -2 <= value <= 2,
        help="times the count of each token already generated: > 0 discourages repeats (0 = off)",
    )
    name: ClassVar[str] = "frequency_penalty"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 40

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return logits - self.frequency_penalty * generated_counts(logits, history)
