"""Sampler stages: small pure functions over (B, V) logits, composed into an ordered chain.

Each stage is a frozen dataclass: its parameters are validated once, at construction, with an error
that quotes the bad value; calling it returns *new* logits and never changes its input. Stages that
depend on what was written so far read it from a `History`. Removed tokens get -inf, as in
transformers, so the softmax of a stage's output is exactly the distribution a sample is drawn from.

Default order (transformers' order for the stages it has): logit_bias, repetition_penalty,
presence_penalty, frequency_penalty, no_repeat_ngram, temperature, top_k, top_p, min_p, typical_p.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import torch

from decodelab.errors import BadInput

FILTERED = -math.inf  # the logit of a token a stage removes


@dataclass(frozen=True)
class History:
    """What the model has seen: prompt + generated ids per row."""

    ids: torch.Tensor  # (B, T) long
    prompt_length: int  # the first `prompt_length` columns are the prompt

    @property
    def generated(self) -> torch.Tensor:
        return self.ids[:, self.prompt_length :]  # (B, T - prompt_length)


class Stage(Protocol):
    name: ClassVar[str]
    warper: ClassVar[bool]  # reshapes the distribution for sampling; greedy decoding skips it

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor: ...


# Bounds that keep float32 logits finite: logits / 1e-40 or a bias of 1e39 overflow to inf, and the
# softmax of an inf is NaN, which no draw can sample from.
MIN_TEMPERATURE = 1e-4
MAX_PENALTY = 1e4
MAX_BIAS = 1e6


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise BadInput(message)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class LogitBias:
    """Add a bias to chosen tokens' logits; a bias of -inf bans the token outright."""

    bias: dict[int, float]  # token id -> additive bias
    name: ClassVar[str] = "logit_bias"
    warper: ClassVar[bool] = False

    def __post_init__(self):
        _require(bool(self.bias), "logit_bias needs at least one token id -> bias entry")
        for token, value in self.bias.items():
            _require(isinstance(token, int) and 0 <= token < 2**31,
                     f"logit_bias keys must be token ids (whole numbers from 0), got {token!r}")
            _require(
                isinstance(value, (int, float)) and (abs(value) <= MAX_BIAS or value == -math.inf),
                f"logit_bias values must be numbers in [-{MAX_BIAS:g}, {MAX_BIAS:g}] or -inf, got {value!r} "
                f"for token {token}",
            )

    def __call__(self, logits, history):
        ids = torch.tensor(list(self.bias), dtype=torch.long, device=logits.device)
        _require(int(ids.max()) < logits.shape[-1], f"logit_bias token {int(ids.max())} is outside the vocabulary")
        values = torch.tensor(list(self.bias.values()), dtype=logits.dtype, device=logits.device)
        return logits.index_add(-1, ids, values.expand(logits.shape[0], -1))


@dataclass(frozen=True)
class RepetitionPenalty:
    """Divide positive (multiply negative) logits of every token already in the sequence (CTRL; transformers)."""

    penalty: float  # > 0; 1 does nothing, > 1 discourages repeats
    name: ClassVar[str] = "repetition_penalty"
    warper: ClassVar[bool] = False

    def __post_init__(self):
        _require(_is_number(self.penalty) and 1 / MAX_PENALTY <= self.penalty <= MAX_PENALTY,
                 f"repetition_penalty must be in [{1 / MAX_PENALTY:g}, {MAX_PENALTY:g}], got {self.penalty!r}")

    def __call__(self, logits, history):
        seen = logits.gather(1, history.ids)  # (B, T)
        penalized = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return logits.scatter(1, history.ids, penalized)


@dataclass(frozen=True)
class PresencePenalty:
    """Subtract a flat penalty from every token that already appears in the *generated* text (OpenAI)."""

    penalty: float  # in [-2, 2]
    name: ClassVar[str] = "presence_penalty"
    warper: ClassVar[bool] = False

    def __post_init__(self):
        _require_openai_penalty(self.name, self.penalty)

    def __call__(self, logits, history):
        counts = _generated_counts(logits, history)
        return logits - self.penalty * (counts > 0).to(logits.dtype)


@dataclass(frozen=True)
class FrequencyPenalty:
    """Subtract a penalty times how often each token already appears in the *generated* text (OpenAI)."""

    penalty: float  # in [-2, 2]
    name: ClassVar[str] = "frequency_penalty"
    warper: ClassVar[bool] = False

    def __post_init__(self):
        _require_openai_penalty(self.name, self.penalty)

    def __call__(self, logits, history):
        return logits - self.penalty * _generated_counts(logits, history)


def _require_openai_penalty(name: str, value: object) -> None:
    _require(_is_number(value) and -2 <= value <= 2, f"{name} must be in [-2, 2], got {value!r}")


def _generated_counts(logits: torch.Tensor, history: History) -> torch.Tensor:
    generated = history.generated  # (B, G)
    counts = torch.zeros_like(logits)  # (B, V)
    return counts.scatter_add(1, generated, torch.ones_like(generated, dtype=logits.dtype))


@dataclass(frozen=True)
class NoRepeatNGram:
    """Ban any token that would complete an n-gram already present in the sequence (transformers)."""

    size: int  # n >= 1
    name: ClassVar[str] = "no_repeat_ngram"
    warper: ClassVar[bool] = False

    def __post_init__(self):
        _require(isinstance(self.size, int) and self.size >= 1, f"no_repeat_ngram_size must be >= 1, got {self.size!r}")

    def __call__(self, logits, history):
        out = logits.clone()
        n = self.size
        for row, ids in enumerate(history.ids.tolist()):
            if len(ids) + 1 < n:
                continue
            prefix = tuple(ids[len(ids) - n + 1 :]) if n > 1 else ()
            banned = {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix}
            if banned:
                out[row, list(banned)] = FILTERED
        return out


@dataclass(frozen=True)
class Temperature:
    """Divide logits by T: T < 1 sharpens the distribution, T > 1 flattens it."""

    temperature: float  # > 0 (0 means greedy and is handled by the selector, not here)
    name: ClassVar[str] = "temperature"
    warper: ClassVar[bool] = True

    def __post_init__(self):
        _require(_is_number(self.temperature) and self.temperature >= MIN_TEMPERATURE,
                 f"temperature must be at least {MIN_TEMPERATURE:g} (use greedy, or 0, for the argmax), "
                 f"got {self.temperature!r}")

    def __call__(self, logits, history):
        return logits / self.temperature


@dataclass(frozen=True)
class TopK:
    """Keep the k most likely tokens (ties with the k-th are kept, as in transformers)."""

    k: int  # >= 1
    name: ClassVar[str] = "top_k"
    warper: ClassVar[bool] = True

    def __post_init__(self):
        _require(isinstance(self.k, int) and not isinstance(self.k, bool) and self.k >= 1,
                 f"top_k must be a whole number >= 1 (leave it unset to keep every token), got {self.k!r}")

    def __call__(self, logits, history):
        kth = torch.topk(logits, min(self.k, logits.shape[-1])).values[..., -1:]  # (B, 1)
        return logits.masked_fill(logits < kth, FILTERED)


@dataclass(frozen=True)
class TopP:
    """Nucleus: keep the smallest set of most likely tokens whose probability adds up to at least p."""

    p: float  # in (0, 1]
    name: ClassVar[str] = "top_p"
    warper: ClassVar[bool] = True

    def __post_init__(self):
        _require(_is_number(self.p) and 0 < self.p <= 1, f"top_p must be in (0, 1], got {self.p!r}")

    def __call__(self, logits, history):
        # Sort ascending; drop the low tail whose cumulative mass stays within 1 - p; always keep the top token.
        sorted_logits, order = torch.sort(logits, descending=False)
        tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        drop_sorted = tail_mass <= 1 - self.p
        drop_sorted[..., -1] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return logits.masked_fill(drop, FILTERED)


@dataclass(frozen=True)
class MinP:
    """Keep tokens whose probability is at least min_p times the top token's probability."""

    min_p: float  # in [0, 1]
    name: ClassVar[str] = "min_p"
    warper: ClassVar[bool] = True

    def __post_init__(self):
        _require(_is_number(self.min_p) and 0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p!r}")

    def __call__(self, logits, history):
        probs = logits.softmax(dim=-1)
        drop = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        drop = drop.scatter(-1, probs.argmax(dim=-1, keepdim=True), False)  # the top token always stays
        return logits.masked_fill(drop, FILTERED)


@dataclass(frozen=True)
class TypicalP:
    """Locally typical sampling: keep tokens whose surprisal is closest to the entropy, up to mass p."""

    mass: float  # in (0, 1]
    name: ClassVar[str] = "typical_p"
    warper: ClassVar[bool] = True

    def __post_init__(self):
        _require(_is_number(self.mass) and 0 < self.mass <= 1, f"typical_p must be in (0, 1], got {self.mass!r}")

    def __call__(self, logits, history):
        logprobs = logits.log_softmax(dim=-1)
        entropy = -(logprobs * logprobs.exp()).nansum(-1, keepdim=True)  # (B, 1)
        # Order tokens by |surprisal - entropy|, then keep them until their mass reaches `mass`.
        distance, order = torch.sort((-logprobs - entropy).abs(), descending=False)
        mass_so_far = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (mass_so_far < self.mass).sum(dim=1).clamp(max=distance.shape[-1] - 1)
        drop_sorted = distance > distance.gather(1, last.view(-1, 1))
        drop_sorted[..., 0] = False
        drop = drop_sorted.scatter(1, order, drop_sorted)
        return logits.masked_fill(drop, FILTERED)


STAGES: dict[str, type] = {
    stage.name: stage
    for stage in (LogitBias, RepetitionPenalty, PresencePenalty, FrequencyPenalty, NoRepeatNGram,
                  Temperature, TopK, TopP, MinP, TypicalP)
}
DEFAULT_ORDER: tuple[str, ...] = tuple(STAGES)


@dataclass(frozen=True)
class StageReport:
    """What one stage did to one row at one step."""

    name: str
    kept: int  # tokens still possible (finite logit) after the stage
    removed_mass: float  # probability (before the stage) of the tokens it removed

    def to_dict(self) -> dict:
        return {"name": self.name, "kept": self.kept, "removed_mass": self.removed_mass}


@dataclass(frozen=True)
class SamplerChain:
    """Stages applied in order; itself a stage. `traced()` also reports per stage and row."""

    stages: tuple = field(default_factory=tuple)
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
            for row in range(logits.shape[0]):
                reports[row].append(StageReport(stage.name, int(kept[row]), float(removed[row])))
            logits, finite = shaped, still
        return logits, reports
