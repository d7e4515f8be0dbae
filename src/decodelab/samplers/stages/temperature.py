"""`temperature`: divide the logits by T — T < 1 sharpens the distribution, T > 1 flattens it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import MIN_TEMPERATURE, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class Temperature(Stage):
    """Divide logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""

    # 1 changes nothing; 0 means greedy, which the selector handles (GenerationConfig.is_greedy), not this stage
    temperature: float = setting(
        kind="float",
        off=(1.0, 0.0),
        metavar="T",
        slider=(0.0, 2.0, 0.05),
        allowed=f"must be at least {MIN_TEMPERATURE:g} (0 means greedy)",
        check=lambda value: is_number(value) and value >= MIN_TEMPERATURE,
        help=f">= {MIN_TEMPERATURE:g}; < 1 sharpens, > 1 flattens (0 = greedy, 1 = off)",
    )
    name: ClassVar[str] = "temperature"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 60

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return logits / self.temperature
