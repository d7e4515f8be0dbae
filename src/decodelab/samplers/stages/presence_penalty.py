"""`presence_penalty`: OpenAI's penalty on tokens already generated (the prompt is not counted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import History, Stage, generated_counts, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class PresencePenalty(Stage):
    """Subtract a flat penalty from every token that already appears in the *generated* text (OpenAI)."""

    presence_penalty: float = setting(
        kind="float",
        off=(0.0,),
        slider=(-2.0, 2.0, 0.1),
        allowed="must be in [-2, 2]",
        check=lambda value: is_number(value) and -2 <= value <= 2,
        help="per token already generated, once: > 0 discourages repeats (0 = off)",
    )
    name: ClassVar[str] = "presence_penalty"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 30

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        counts = generated_counts(logits, history)  # (B, V)
        return logits - self.presence_penalty * (counts > 0).to(logits.dtype)
