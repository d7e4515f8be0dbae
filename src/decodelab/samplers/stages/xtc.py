"""`xtc`: exclude top choices — now and then, remove every likely token but the least likely of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register

_XTC_SALT = 0x58544321  # "XTC!": its coin is not the selector's draw, though both come from the step's seed


@register
@dataclass(frozen=True)
class XTC(Stage):
    """Exclude top choices (llama.cpp): with probability p, remove the tokens at or above the threshold except
    the least likely of them."""

    xtc_probability: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="P",
        slider=(0.0, 1.0, 0.05),
        allowed="must be in [0, 1]",
        check=lambda value: is_number(value) and 0 <= value <= 1,
        help="chance per step that XTC removes the top choices (0 = off)",
    )
    xtc_threshold: float = setting(
        kind="float",
        default=0.1,
        metavar="T",
        slider=(0.0, 0.5, 0.01),
        allowed="must be in [0, 1]",
        check=lambda value: is_number(value) and 0 <= value <= 1,
        help="tokens at least this likely count as top choices (> 0.5 never removes any)",
    )
    name: ClassVar[str] = "xtc"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 130

    def coin(self, step_seed: int) -> float:
        """The step's uniform draw in [0, 1): XTC acts when it is <= xtc_probability (as llama.cpp)."""
        generator = torch.Generator().manual_seed((step_seed ^ _XTC_SALT) % 2**64)
        return float(torch.rand((), generator=generator))

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        out = logits.clone()
        probs = logits.softmax(dim=-1)  # (B, V)
        for row, step_seed in enumerate(history.step_seeds):
            if step_seed is None or self.coin(step_seed) > self.xtc_probability:
                continue  # no draw at this step (a forced token), or the coin says not this time
            top = probs[row] >= self.xtc_threshold  # (V,) the top choices
            if int(top.sum()) < 2:
                continue  # one top choice or none: nothing to exclude
            # Keep the least likely top choice (the lowest id among ties), remove the others.
            least = probs[row].masked_fill(~top, float("inf")).argmin()
            top[least] = False
            out[row, top] = FILTERED
        return out
