"""`GenerationConfig`: every knob of a generation, validated once, and the sampler chain it implies.

The sampler settings (temperature, top_k, top_p, ...) are not written here: each stage declares its own in
`decodelab.samplers.stages`, and `_with_stage_settings` adds one field per declared setting, with its default,
before the dataclass is made. `GenerationConfig(top_p=0.9)` works like any dataclass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from decodelab.constraints import Constraint, ConstraintStage
from decodelab.errors import BadInput
from decodelab.samplers import DEFAULT_ORDER, STAGES, SamplerChain, Setting, all_settings
from decodelab.samplers.base import Stage, is_whole

if TYPE_CHECKING:
    from decodelab.decoder import Decoder

MAX_TOP_N = 100  # alternatives a step may record: each costs memory in every Step of a trace


def _with_stage_settings(cls: type) -> type:
    """Add one field per registered sampler setting (after `greedy`) before `dataclass` reads the class."""
    own = dict(cls.__annotations__)
    first = dict(list(own.items())[:2])  # max_new_tokens, greedy
    for declared in all_settings():
        if isinstance(declared.default, dict):  # a fresh dict per config, never one shared
            setattr(cls, declared.name, field(default_factory=dict))
        else:
            setattr(cls, declared.name, declared.default)
    cls.__annotations__ = {**first, **{declared.name: "Any" for declared in all_settings()}, **own}
    return cls


@dataclass(frozen=True)
@_with_stage_settings
class GenerationConfig:
    max_new_tokens: int = 64  # most tokens to generate
    greedy: bool = False  # argmax instead of a random draw (also when temperature == 0)
    # ... here: one field per sampler setting (temperature, top_k, top_p, ..., logit_bias, ban)
    stop: tuple[str, ...] = ()  # stop strings (matched on text, across token boundaries, trimmed)
    stop_token_ids: tuple[int, ...] | None = None  # None = the model's auto-detected stop tokens
    max_time: float | None = None  # seconds; stop after the step that crosses it
    seed: int | None = None  # None = a fresh random seed, recorded in the result
    samplers: tuple[str, ...] | None = None  # stage order; None = DEFAULT_ORDER
    top_n: int = 5  # alternatives recorded per step, at most MAX_TOP_N
    trace: bool = True  # record per-step alternatives and per-stage reports (tokens are the same either way)
    constraint: Constraint | None = None  # a grammar every output must match (decodelab.constraints), applied first

    if TYPE_CHECKING:  # the sampler settings, added at import time

        def __init__(self, **values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

    def __post_init__(self) -> None:
        _check_int("max_new_tokens", self.max_new_tokens, minimum=1)
        _check_int("top_n", self.top_n, minimum=0, maximum=MAX_TOP_N)
        if not isinstance(self.greedy, bool):
            raise BadInput(f"greedy must be true or false, got {self.greedy!r}")
        for declared in all_settings():
            declared.validate(getattr(self, declared.name))
        if self.max_time is not None and not (_is_real(self.max_time) and self.max_time > 0):
            raise BadInput(f"max_time must be a number of seconds > 0, got {self.max_time!r}")
        if self.seed is not None and not (is_whole(self.seed) and 0 <= self.seed < 2**63):
            raise BadInput(f"seed must be a whole number in [0, 2**63), got {self.seed!r}")
        if not isinstance(self.stop, (tuple, list)) or any(not isinstance(s, str) or not s for s in self.stop):
            raise BadInput(f"stop must be a list of non-empty strings, got {self.stop!r}")
        if self.constraint is not None and not isinstance(self.constraint, Constraint):
            raise BadInput(
                f"constraint must be a decodelab.constraints.Constraint (e.g. Constraint.regex(...)), got "
                f"{str(self.constraint)[:60]}"
            )
        self._stages()  # validates the order

    def with_(self, **changes: Any) -> GenerationConfig:
        return replace(self, **changes)

    @property
    def is_greedy(self) -> bool:
        return bool(self.greedy) or self.temperature == 0

    def chain(self, decoder: Decoder | None = None) -> SamplerChain:
        """The configured stages in order; greedy decoding leaves out the warpers, as transformers does. A
        constraint comes first and needs the `decoder` (its tokenizer and stop tokens make the grammar's mask)."""
        stages = self._stages()
        if decoder is not None and getattr(decoder.backend, "partial_logits", False):  # a remote model
            from decodelab.remote.backend import ReportedTokens

            stages = [ReportedTokens(), *stages]  # only what the server reported may be drawn
        if self.constraint is not None:
            if decoder is None:
                raise BadInput("a constrained config's chain needs the model: call config.chain(lm.decoder)")
            stop_ids = decoder.stop_ids(self.stop, self.stop_token_ids)
            constraint = ConstraintStage.build(self.constraint, decoder.tokenizer, stop_ids, decoder.backend.vocab_size)
            stages = [constraint, *stages]
        return SamplerChain(tuple(stages))

    def _stages(self) -> list[Stage]:
        """The registered stages this config turns on, in order (the constraint stage aside)."""
        values = self.to_dict()
        configured = {name: stage for name, kind in STAGES.items() if (stage := kind.from_config(values)) is not None}
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
        return stages

    def to_dict(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.constraint is not None:
            values["constraint"] = self.constraint.to_dict()  # JSON-ready, as every other value
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GenerationConfig:
        """A config from JSON-shaped values: lists become tuples, logit_bias keys may be digit strings."""
        return cls(**{name: from_json(name, value) for name, value in values.items()})


def from_json(name: str, value: Any) -> Any:
    """One config value as JSON carries it -> as GenerationConfig holds it (bad shapes: one BadInput)."""
    declared: Setting | None = next((s for s in all_settings() if s.name == name), None)
    kind = (
        declared.kind
        if declared
        else "strings"
        if name in ("stop", "samplers")
        else "token_ids"
        if name == "stop_token_ids"
        else None
    )
    if name == "constraint" and isinstance(value, Mapping):
        if set(value) != {"kind", "source"}:
            raise BadInput(f"a constraint is {{'kind', 'source'}}, got {str(value)[:80]}")
        return Constraint(value["kind"], value["source"])
    if value is None or kind is None:
        return value
    if kind == "token_bias":
        if not isinstance(value, dict):
            raise BadInput(f'{name} must map token ids to numbers, e.g. {{"50256": -100}}, got {str(value)[:80]}')
        # JSON has no -inf: a null bias, as decodelab's own JSON writes a ban (`finite`), is -inf again
        return {parse_token_id(token): -math.inf if bias is None else bias for token, bias in value.items()}
    if kind in ("token_ids", "strings"):
        if isinstance(value, str) and kind == "strings" and name == "stop":
            return (value,)
        if not isinstance(value, (list, tuple)):
            raise BadInput(f"{name} must be a list, got {str(value)[:80]}")
        return tuple(value)
    return value


def parse_token_id(key: object) -> int:
    """A token id as a JSON object key sends it ("50256" -> 50256): ASCII digits only, as OpenAI takes them."""
    if is_whole(key):
        return key  # type: ignore[return-value]
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 10:
        return int(key)
    raise BadInput(f'logit_bias keys must be token ids written in digits, e.g. "50256", got {str(key)[:40]!r}')


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> None:
    if not is_whole(value) or value < minimum:  # type: ignore[operator]
        raise BadInput(f"{name} must be a whole number >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:  # type: ignore[operator]
        raise BadInput(f"{name} must be at most {maximum}, got {value!r}")
