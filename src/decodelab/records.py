"""The records every consumer reads: one `Step` per generated token, and the `Result` of a generation."""

from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from decodelab import views
from decodelab.samplers import StageReport
from decodelab.tokens import visible

if TYPE_CHECKING:
    import pandas


@dataclass(frozen=True)
class Alternative:
    id: int
    piece: str  # readable text of the token (partial characters as <0xNN>)
    prob: float
    bytes: builtins.bytes = b""  # exact bytes the token adds to the text; left empty, its piece's UTF-8

    def __post_init__(self) -> None:
        if not self.bytes and self.piece:
            object.__setattr__(self, "bytes", self.piece.encode())

    def to_dict(self) -> dict:
        return {"id": self.id, "piece": self.piece, "prob": self.prob, "bytes": list(self.bytes)}


@dataclass(frozen=True)
class Step:
    """One token of a generation, with everything that explains why it was chosen."""

    index: int  # 0 for the first generated token
    token_id: int
    piece: str  # readable text of the token (partial characters as <0xNN>)
    prob: float  # probability under the sampler chain's distribution: what the token was drawn from
    raw_prob: float  # probability under the model's unmodified softmax
    logprob: float  # natural log of raw_prob
    rank: int  # 1 + tokens strictly more likely in the raw distribution
    entropy: float  # of the raw distribution, nats
    top: tuple[Alternative, ...] = ()  # most likely after the chain
    raw_top: tuple[Alternative, ...] = ()  # most likely before it
    stages: tuple[StageReport, ...] = ()  # what each stage kept and removed
    row: int = 0  # batch row (sample number) for n > 1
    forced: bool = False  # appended by the user rather than chosen by the selector
    bytes: builtins.bytes = b""  # exact bytes the token adds to the text; left empty, its piece's UTF-8
    is_stop: bool = False  # one of the run's stop tokens: choosing it ended (or would end) the generation
    special: bool = False  # a control token such as <|im_end|>, not text

    def __post_init__(self) -> None:
        # A Step built by hand from a piece of plain text: its bytes are that text's. (Never parsed back from
        # the piece: model text can read "<0x41>", which is six bytes, not one.)
        if not self.bytes and self.piece:
            object.__setattr__(self, "bytes", self.piece.encode())

    def to_dict(self) -> dict:
        return {
            "step": self.index,
            "id": self.token_id,
            "piece": self.piece,
            "prob": self.prob,
            "raw_prob": self.raw_prob,
            "logprob": self.logprob,
            "rank": self.rank,
            "entropy": self.entropy,
            "top": [a.to_dict() for a in self.top],
            "raw_top": [a.to_dict() for a in self.raw_top],
            "stages": [s.to_dict() for s in self.stages],
            "overruled_by": self.overruled_by,
            "row": self.row,
            "forced": self.forced,
            "bytes": list(self.bytes),  # as OpenAI's logprobs give them: JSON has no byte strings
            "is_stop": self.is_stop,
            "special": self.special,
        }

    @property
    def overruled_by(self) -> str | None:
        """The stage that removed the model's own top choice at this step (the first, when several did; a
        grammar forbidding where the model wanted to go, a ban, a penalty...), or None when the model's top
        choice survived the chain (or the step was not traced)."""
        return next((report.name for report in self.stages if report.removed_top), None)

    def choices(self, n: int = 5) -> str:
        """The tutorial's choice cells: 'most (8.53%) | only (4.96%) | ...' from the raw distribution."""
        return " | ".join(f"{visible(a.piece)} ({a.prob:.2%})" for a in (self.raw_top or self.top)[:n])


def overruled_note(stage: str, wanted: str) -> str:
    """ "model wanted '␣Yes'; the constraint forbade it": a stage removed the model's own top choice `wanted`."""
    removed = "the constraint forbade it" if stage == "constraint" else f"the {stage} stage removed it"
    return f"model wanted {visible(wanted)!r}; {removed}"


@dataclass(frozen=True)
class StopReason:
    kind: str  # "stop_token" | "stop_string" | "constraint_complete" | "max_new_tokens" | "max_time" | "context_full"
    token_id: int | None = None  # the stop token that fired
    string: str | None = None  # the stop string that fired

    def to_dict(self) -> dict:
        return {"kind": self.kind, "token_id": self.token_id, "string": self.string}

    def __str__(self) -> str:
        if self.kind == "stop_token":
            return f"stop token {self.token_id}"
        if self.kind == "stop_string":
            return f"stop string {self.string!r}"
        return self.kind.replace("_", " ")


@dataclass
class Result:
    """What one row of a generation produced."""

    text: str  # generated text, stop token excluded and stop string trimmed
    token_ids: list[int]  # generated ids (a stop token that fired is included: the model chose it)
    stop_reason: StopReason
    steps: list[Step] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    seed: int | None = None  # the row's seed: replaying with it reproduces this result
    elapsed: float = 0.0  # seconds, prefill included

    @property
    def logprob(self) -> float:
        """Sum of the chosen tokens' raw log-probabilities: log P(generated ids | prompt)."""
        return sum(step.logprob for step in self.steps)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "token_ids": self.token_ids,
            "stop_reason": self.stop_reason.to_dict(),
            "seed": self.seed,
            "prompt_tokens": len(self.prompt_ids),
            "completion_tokens": len(self.token_ids),
            "elapsed": self.elapsed,
        }

    def _repr_html_(self) -> str:
        """Jupyter: the text with each token shaded by its probability; alternatives on hover."""
        return views.html(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per step: step, id, piece, prob, raw_prob, logprob, rank, entropy, row, forced, is_stop and
        the model's top choices (needs pandas)."""
        return views.frame(self)
