"""`SamplerChain`: stages applied in order, itself a stage; `traced()` also says what each stage removed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from decodelab.samplers.base import History, Stage


@dataclass(frozen=True)
class StageReport:
    """What one stage did to one row at one step."""

    name: str
    kept: int  # tokens still possible (finite logit) after the stage
    removed_mass: float  # probability (before the stage) of the tokens it removed
    removed_top: bool = False  # it removed the token that was most likely before it (for the first stage: the
    # model's own top choice, e.g. a grammar forbidding where the model wanted to go)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "kept": self.kept,
            "removed_mass": self.removed_mass,
            "removed_top": self.removed_top,
        }


@dataclass(frozen=True)
class SamplerChain:
    """Stages applied in order; itself a stage. `traced()` also reports per stage and row."""

    stages: tuple[Stage, ...] = field(default_factory=tuple)
    name: ClassVar[str] = "chain"
    warper: ClassVar[bool] = False

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        if not self.stages:
            return logits.clone()  # a new tensor, like every stage
        for stage in self.stages:
            logits = stage(logits, history)
        return logits

    def traced(self, logits: torch.Tensor, history: History) -> tuple[torch.Tensor, list[list[StageReport]]]:
        """Final logits (B, V) and, per row, one `StageReport` per stage."""
        reports: list[list[StageReport]] = [[] for _ in range(logits.shape[0])]
        finite = torch.isfinite(logits)  # (B, V)
        for stage in self.stages:
            shaped = stage(logits, history)
            still = torch.isfinite(shaped)
            removed = (logits.softmax(dim=-1) * (finite & ~still)).sum(dim=-1)  # (B,)
            kept = still.sum(dim=-1)
            top_removed = ~still.gather(1, logits.argmax(dim=-1, keepdim=True))[:, 0]  # (B,)
            for row in range(logits.shape[0]):
                reports[row].append(
                    StageReport(stage.name, int(kept[row]), float(removed[row]), bool(top_removed[row]))
                )
            logits, finite = shaped, still
        return logits, reports

    @property
    def ends_outputs(self) -> bool:
        """Whether a stage may end a row's output (a grammar), so the loop asks `complete` after each token."""
        return any(stage.ends_outputs for stage in self.stages)

    def complete(self, generated: list[int]) -> bool:
        """Whether a stage says a row with these generated ids is finished."""
        return any(stage.complete(generated) for stage in self.stages if stage.ends_outputs)

    @property
    def stateful(self) -> bool:
        """Whether any stage keeps memory between steps (the loop then asks `remember` after each draw)."""
        return any(stage.stateful for stage in self.stages)

    def remember(self, history: History, final_logits: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The stateful stages' memory after a draw of `tokens` (B,) from softmax(final_logits) (B, V); the
        memory of stages not in this chain is carried over unchanged."""
        memory = dict(history.memory)
        for stage in self.stages:
            if stage.stateful:
                memory[stage.name] = stage.remember(history.memory.get(stage.name), final_logits, tokens)
        return memory
