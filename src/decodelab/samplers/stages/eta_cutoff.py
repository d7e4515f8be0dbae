"""`eta_cutoff`: η-sampling — ε-sampling with a cutoff that drops as the entropy rises (transformers'
EtaLogitsWarper)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import History, Stage, is_number, setting
from decodelab.samplers.registry import register
from decodelab.samplers.stages.epsilon_cutoff import remove_below


@register
@dataclass(frozen=True)
class EtaCutoff(Stage):
    """η-sampling: remove tokens with probability below min(ε, √ε · e^-entropy), keeping at least the top one
    (Hewitt et al. 2022)."""

    eta_cutoff: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="EPSILON",
        slider=(0.0, 0.02, 0.0002),
        allowed="must be in (0, 1)",
        check=lambda value: is_number(value) and 0 < value < 1,
        help="remove tokens with probability below min(EPSILON, sqrt(EPSILON) * exp(-entropy)); the paper "
        "suggests 3e-4 to 2e-3 (0 = off)",
    )
    name: ClassVar[str] = "eta_cutoff"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 120

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        # The entropy in nats, as torch.distributions.Categorical computes it (so the cut is transformers' to the
        # bit): normalise to log-probabilities, softmax those, and let removed tokens (-inf) add 0, not NaN.
        logprobs = logits - logits.logsumexp(dim=-1, keepdim=True)  # (B, V)
        finite_logprobs = logprobs.clamp(min=torch.finfo(logits.dtype).min)
        entropy = -(finite_logprobs * logprobs.softmax(dim=-1)).sum(dim=-1)  # (B,)
        # High entropy (a flat distribution) lowers the cutoff below ε; a peaked one leaves it at ε.
        epsilon = torch.tensor(self.eta_cutoff, dtype=logits.dtype, device=logits.device)
        eta = torch.minimum(epsilon, epsilon.sqrt() * torch.exp(-entropy)).unsqueeze(-1)  # (B, 1)
        return remove_below(logits, logits.softmax(dim=-1), eta)  # (B, V)
