"""`epsilon_cutoff`: ε-sampling — remove every token less likely than ε (transformers' EpsilonLogitsWarper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


def remove_below(logits: torch.Tensor, probs: torch.Tensor, cutoff: torch.Tensor | float) -> torch.Tensor:
    """New logits without the tokens whose probability is below `cutoff` ((B, 1) or a number), except the most
    likely token and every token tied with it (transformers' min_tokens_to_keep=1)."""
    top = logits.amax(dim=-1, keepdim=True)  # (B, 1)
    return logits.masked_fill((probs < cutoff) & (logits < top), FILTERED)


@register
@dataclass(frozen=True)
class EpsilonCutoff(Stage):
    """ε-sampling: remove tokens with probability below ε, keeping at least the top one (Hewitt et al. 2022)."""

    epsilon_cutoff: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="EPSILON",
        slider=(0.0, 0.02, 0.0002),
        allowed="must be in (0, 1)",
        check=lambda value: is_number(value) and 0 < value < 1,
        help="remove tokens with probability below EPSILON; the paper suggests 3e-4 to 9e-4 (0 = off)",
    )
    name: ClassVar[str] = "epsilon_cutoff"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 110

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        # The probabilities are relative to the tokens still in play: earlier stages' removals (-inf) get 0.
        return remove_below(logits, logits.softmax(dim=-1), self.epsilon_cutoff)  # (B, V)
