"""`GenerationConfig`: every knob of a generation, validated once, and the sampler chain it implies."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

from decodelab.errors import BadInput
from decodelab.samplers import (
    DEFAULT_ORDER, STAGES, FrequencyPenalty, LogitBias, MinP, NoRepeatNGram, PresencePenalty, RepetitionPenalty,
    SamplerChain, Temperature, TopK, TopP, TypicalP,
)

MAX_TOP_N = 100  # alternatives a step may record: each costs memory in every Step of a trace


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64  # most tokens to generate
    greedy: bool = False  # argmax instead of a random draw (also when temperature == 0)
    temperature: float = 1.0  # > 0; 0 means greedy
    top_k: int | None = None  # keep the k most likely tokens
    top_p: float | None = None  # nucleus mass in (0, 1]
    min_p: float | None = None  # keep tokens with p >= min_p * p(top token)
    typical_p: float | None = None  # locally typical mass in (0, 1]
    repetition_penalty: float | None = None  # > 0; > 1 discourages any token already in the sequence
    presence_penalty: float = 0.0  # [-2, 2], per token already generated
    frequency_penalty: float = 0.0  # [-2, 2], times the count of each token already generated
    no_repeat_ngram_size: int = 0  # ban repeating any n-gram of this size (0 = off)
    logit_bias: dict[int, float] = field(default_factory=dict)  # token id -> bias added to its logit
    ban: tuple[int, ...] = ()  # token ids that may never be chosen
    stop: tuple[str, ...] = ()  # stop strings (matched on text, across token boundaries, trimmed)
    stop_token_ids: tuple[int, ...] | None = None  # None = the model's auto-detected stop tokens
    max_time: float | None = None  # seconds; stop after the step that crosses it
    seed: int | None = None  # None = a fresh random seed, recorded in the result
    samplers: tuple[str, ...] | None = None  # stage order; None = DEFAULT_ORDER
    top_n: int = 5  # alternatives recorded per step, at most MAX_TOP_N
    trace: bool = True  # record per-step alternatives and per-stage reports (tokens are the same either way)

    def __post_init__(self):
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("no_repeat_ngram_size", self.no_repeat_ngram_size, minimum=0)
        _check_int("top_n", self.top_n, minimum=0, maximum=MAX_TOP_N)
        if not _is_real(self.temperature) or self.temperature < 0:
            raise BadInput(f"temperature must be >= 0 (0 means greedy), got {self.temperature!r}")
        if self.max_time is not None and not (_is_real(self.max_time) and self.max_time > 0):
            raise BadInput(f"max_time must be a number of seconds > 0, got {self.max_time!r}")
        if self.seed is not None and not (isinstance(self.seed, int) and 0 <= self.seed < 2**63):
            raise BadInput(f"seed must be a whole number in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.stop, (tuple, list)) or any(not isinstance(s, str) or not s for s in self.stop):
            raise BadInput(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if not isinstance(self.logit_bias, dict) or not all(
            isinstance(k, int) and not isinstance(k, bool) and _is_real(v) for k, v in self.logit_bias.items()
        ):
            raise BadInput(f"logit_bias must map token ids to numbers, e.g. {{50256: -100}}, got {self.logit_bias!r}")
        if not isinstance(self.ban, tuple | list) or not all(_is_token_id(token) for token in self.ban):
            raise BadInput(f"ban must be a list of token ids (whole numbers from 0), got {str(self.ban)[:80]}")
        self.chain()  # validates every stage's parameters and the order

    def with_(self, **changes) -> GenerationConfig:
        return replace(self, **changes)

    @property
    def is_greedy(self) -> bool:
        return self.greedy or self.temperature == 0

    def chain(self) -> SamplerChain:
        """The configured stages in order; greedy decoding leaves out the warpers, as transformers does."""
        configured = self._configured_stages()
        order = self.samplers if self.samplers is not None else DEFAULT_ORDER
        unknown = [name for name in order if name not in STAGES]
        if unknown:
            raise BadInput(f"unknown sampler {unknown[0]!r}: choose from {', '.join(STAGES)}")
        left_out = [name for name in configured if name not in order]
        if left_out:
            raise BadInput(f"{left_out[0]} is set but missing from the sampler order {','.join(order)}: add it")
        stages = [configured[name] for name in order if name in configured]
        if self.is_greedy:
            stages = [stage for stage in stages if not stage.warper]
        return SamplerChain(tuple(stages))

    def _configured_stages(self) -> dict:
        stages = {}
        bias = dict(self.logit_bias)
        for token in self.ban:
            bias[token] = -math.inf
        if bias:
            stages["logit_bias"] = LogitBias(bias)
        if self.repetition_penalty is not None and self.repetition_penalty != 1.0:
            stages["repetition_penalty"] = RepetitionPenalty(self.repetition_penalty)
        if self.presence_penalty:
            stages["presence_penalty"] = PresencePenalty(self.presence_penalty)
        if self.frequency_penalty:
            stages["frequency_penalty"] = FrequencyPenalty(self.frequency_penalty)
        if self.no_repeat_ngram_size:
            stages["no_repeat_ngram"] = NoRepeatNGram(self.no_repeat_ngram_size)
        if self.temperature not in (0, 1):
            stages["temperature"] = Temperature(self.temperature)
        if self.top_k is not None:
            stages["top_k"] = TopK(self.top_k)
        if self.top_p is not None:
            stages["top_p"] = TopP(self.top_p)
        if self.min_p is not None:
            stages["min_p"] = MinP(self.min_p)
        if self.typical_p is not None:
            stages["typical_p"] = TypicalP(self.typical_p)
        return stages

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> GenerationConfig:
        values = dict(values)
        for name in ("ban", "stop", "stop_token_ids", "samplers"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        if "logit_bias" in values:
            values["logit_bias"] = {parse_token_id(k): float(v) for k, v in values["logit_bias"].items()}
        return cls(**values)


def parse_token_id(key: object) -> int:
    """A token id as a JSON object key sends it ("50256" -> 50256): ASCII digits only, as OpenAI takes them."""
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 10:
        return int(key)
    raise BadInput(f"logit_bias keys must be token ids written in digits, e.g. \"50256\", got {str(key)[:40]!r}")


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_token_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise BadInput(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise BadInput(f"{name} must be at most {maximum}, got {value!r}")
