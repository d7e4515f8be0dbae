"""`mirostat_v2`: keep the output's surprise near a target — truncate by surprise, then learn the cut."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_number, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class MirostatV2(Stage):
    """Mirostat 2.0 (llama.cpp): keep tokens whose surprise -log2 p is at most mu, then move mu toward the
    target tau by eta times the chosen token's surprise error. mu starts at 2 tau and lives per row."""

    mirostat_tau: float = setting(
        kind="float",
        off=(None, 0.0),
        metavar="BITS",
        slider=(0.0, 10.0, 0.5),
        allowed="must be a number > 0 (bits)",
        check=lambda value: is_number(value) and value > 0,
        help="mirostat 2.0's target surprise in bits (5 is llama.cpp's default; 0 or unset = off)",
    )
    mirostat_eta: float = setting(
        kind="float",
        default=0.1,
        metavar="RATE",
        slider=(0.0, 1.0, 0.05),
        allowed="must be in [0, 1]",
        check=lambda value: is_number(value) and 0 <= value <= 1,
        help="mirostat 2.0's learning rate (0 freezes mu)",
    )
    name: ClassVar[str] = "mirostat_v2"
    warper: ClassVar[bool] = True
    position: ClassVar[int] = 140
    stateful: ClassVar[bool] = True

    def mu(self, history: History, rows: int, device: torch.device) -> torch.Tensor:
        """(B,) the current cut in bits: the remembered one, or 2 tau before the first draw."""
        remembered = history.memory.get(self.name)
        if remembered is None:
            return torch.full((rows,), 2 * self.mirostat_tau, dtype=torch.float32, device=device)
        return remembered

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        surprise = -torch.log2(logits.softmax(dim=-1))  # (B, V) bits; removed tokens: inf
        drop = surprise > self.mu(history, logits.shape[0], logits.device)[:, None]
        drop = drop.scatter(-1, logits.argmax(dim=-1, keepdim=True), False)  # the top token always stays
        return logits.masked_fill(drop, FILTERED)

    def remember(self, memory: torch.Tensor | None, final_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        # The observed surprise is the drawn token's, in the renormalised distribution it was drawn from.
        mu = (
            memory
            if memory is not None
            else torch.full(
                (final_logits.shape[0],), 2 * self.mirostat_tau, dtype=torch.float32, device=final_logits.device
            )
        )
        chosen = final_logits.softmax(dim=-1).gather(1, tokens[:, None])[:, 0]  # (B,)
        observed = -torch.log2(chosen)
        return mu - self.mirostat_eta * (observed - self.mirostat_tau)
