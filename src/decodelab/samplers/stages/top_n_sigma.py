"""`top_n_sigma`: keep the tokens whose logit is within n standard deviations of the largest (llama.cpp)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class TopNSigma(Stage):
    """Top-nσ: keep tokens with logit >= max - n * std of the finite logits (Tang et al. 2024; llama.cpp)."""

    # As in llama.cpp, n <= 0 turns it off (its default is -1), so any finite number is allowed.
    top_n_sigma: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="N",
        slider=(0.0, 3.0, 0.05),
        allowed="must be a finite number (0 or less turns it off)",
        check=is_number,
        help="keep tokens whose logit is at least max - N standard deviations of the logits (<= 0 = off)",
    )
    name: ClassVar[str] = "top_n_sigma"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 65

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Stage | None:
        n = values["top_n_sigma"]
        return None if n is None or n <= 0 else cls(n)

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        if self.top_n_sigma <= 0:
            return logits.clone()  # llama.cpp's empty sampler: nothing removed, but still a new tensor
        # Statistics over the finite logits only (tokens already removed do not count), in float64 so that the
        # cut does not hinge on float32 summation order. Population std: divide by the count, not count - 1.
        finite = torch.isfinite(logits)  # (B, V)
        values = torch.where(finite, logits, 0).double()  # (B, V)
        count = finite.sum(dim=-1, keepdim=True)  # (B, 1); a row with nothing finite gives NaN and keeps all
        mean = values.sum(dim=-1, keepdim=True) / count
        variance = torch.where(finite, (values - mean) ** 2, 0).sum(dim=-1, keepdim=True) / count
        top = torch.where(finite, values, -math.inf).amax(dim=-1, keepdim=True)  # (B, 1)
        # Remove every token strictly below the threshold; the largest logit (and its ties) always stays.
        threshold = top - self.top_n_sigma * variance.sqrt()  # (B, 1)
        return logits.masked_fill(logits.double() < threshold, FILTERED)
