"""What every sampler stage is made of: the `History` it reads, its declared `Setting`s, and the `Stage` base.

A stage is a frozen dataclass whose fields are its settings. Each field is declared once with `setting(...)`:
its type, the value that leaves the stage out of the chain, the range check and the message quoting a bad
value, help text, and (optionally) a slider range for the web page. The `GenerationConfig` fields, CLI flags,
server request fields, `compare` words and the page's controls are all derived from these declarations
(see `decodelab.samplers.registry`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import torch

from decodelab.errors import BadInput

FILTERED = -math.inf  # the logit of a token a stage removes

# Bounds that keep float32 logits finite: logits / 1e-40 or a bias of 1e39 overflow to inf, and the
# softmax of an inf is NaN, which no draw can sample from.
MIN_TEMPERATURE = 1e-4
MAX_PENALTY = 1e4
MAX_BIAS = 1e6

# The JSON kinds a setting can have; each consumer (CLI, server, compare, page) knows how to read each one.
KINDS = {
    "float": float,
    "int": int,
    "token_bias": dict,  # token id -> additive bias; JSON object keys are the ids written in digits
    "token_ids": tuple,  # a list of token ids
    "strings": tuple,  # a list of non-empty strings
}
SCALAR_KINDS = ("float", "int")


@dataclass(frozen=True)
class History:
    """What the model has seen, plus what a stage needs to be reproducible: prompt + generated ids per row,
    each row's seed for this step's random choices, and each stateful stage's per-row memory."""

    ids: torch.Tensor  # (B, T) long
    prompt_length: int  # the first `prompt_length` columns are the prompt
    step_seeds: tuple[int | None, ...] = ()  # per row: a seed for this step's randomness (None: no draw here)
    memory: Mapping[str, torch.Tensor] = field(default_factory=dict)  # stage name -> its state, (B, ...)
    # each token's text, id -> str (decoded alone, partial UTF-8 as U+FFFD), for stages that match text such as
    # DRY's sequence breakers; None when the decoder gives none (such stages then say so)
    vocabulary: Sequence[str] | None = None

    @property
    def generated(self) -> torch.Tensor:
        return self.ids[:, self.prompt_length :]  # (B, T - prompt_length)


def is_number(value: object) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_token_id(value: object) -> bool:
    return is_whole(value) and 0 <= value < 2**31  # type: ignore[operator]


@dataclass(frozen=True)
class Setting:
    """One knob of a stage, declared once."""

    name: str  # the GenerationConfig field, CLI flag (--top-p), request field and compare word
    stage: str  # the stage it belongs to
    kind: str  # one of KINDS
    off: tuple  # values that leave the stage out of the chain (the first one is the config default)
    default: Any  # the config default: off[0] for a stage's first setting, else its own default
    allowed: str  # completes "top_p ...": "must be in (0, 1]"
    check: Callable[[Any], bool]  # True when a value is allowed
    help: str
    metavar: str
    slider: tuple[float, float, float] | None  # (low, high, step) of the page's control

    def validate(self, value: Any, allow_off: bool = True) -> None:
        """Raise one BadInput quoting `value` unless it is allowed (or, with allow_off, a value meaning off)."""
        if allow_off and _is_one_of(value, self.off):
            return
        if not self.check(value):
            shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
            raise BadInput(f"{self.name} {self.allowed}, got {shown}")

    def describe(self) -> dict:
        """JSON for the page and /api/info."""
        default = _json(self.default)
        return {
            "name": self.name,
            "kind": self.kind,
            "default": default,
            "off": [_json(v) for v in self.off],
            "allowed": self.allowed,
            "help": self.help,
            "slider": list(self.slider) if self.slider else None,
        }


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _is_one_of(value: Any, options: tuple) -> bool:
    """`value in options`, except that True is not 1 and None is only None."""
    for option in options:
        if option is None or value is None:
            if value is option:
                return True
        elif isinstance(value, bool) == isinstance(option, bool) and value == option:
            return True
    return False


def setting(
    *,
    kind: str,
    allowed: str,
    check: Callable[[Any], bool],
    help: str,
    off: tuple = (None,),
    default: Any = MISSING,
    metavar: str = "X",
    slider: tuple[float, float, float] | None = None,
) -> Any:
    """Declare a stage's field as a setting. A stage's first setting has no default (the stage needs it) and
    `off` says which config values leave the stage out; later settings have a `default` of their own."""
    if kind not in KINDS:
        raise TypeError(f"setting kind must be one of {', '.join(KINDS)}, got {kind!r}")
    declared = {
        "kind": kind,
        "allowed": allowed,
        "check": check,
        "help": help,
        "off": off,
        "metavar": metavar,
        "slider": slider,
    }
    if default is MISSING:
        return field(metadata={"setting": declared})
    if isinstance(default, (dict, list)):
        raise TypeError("a setting's default must be immutable: use a tuple")
    return field(default=default, metadata={"setting": declared})


class Stage:
    """Base of every stage. Subclasses are frozen dataclasses declaring `name`, `warper` and `position` and
    implementing `__call__(logits (B, V), history) -> new logits (B, V)`, never changing their input."""

    name: ClassVar[str]  # the stage's name in orders, traces and reports
    warper: ClassVar[bool]  # reshapes the distribution for sampling; greedy decoding leaves it out
    position: ClassVar[int]  # its place in the default order (lower runs first)
    settings: ClassVar[tuple[Setting, ...]] = ()  # filled in by `register`

    def __post_init__(self) -> None:
        for declared in self.settings:
            declared.validate(getattr(self, declared.name), allow_off=False)

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        raise NotImplementedError

    # A stateful stage (mirostat) keeps per-row memory between steps. The decode loop stores it beside the KV
    # cache (so undo, fork and replay restore it exactly) and hands it back in `History.memory[name]`.
    stateful: ClassVar[bool] = False

    def remember(self, memory: torch.Tensor | None, final_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """A stateful stage's memory (B, ...) after the selector drew `tokens` (B,) from softmax(final_logits)
        (B, V); `memory` is None on the first step."""
        raise NotImplementedError(f"{self.name} is not stateful")

    # A stage that can end an output (a grammar: nothing may follow a whole JSON value) says when a row's
    # generated ids are complete; the loop then stops that row.
    ends_outputs: ClassVar[bool] = False

    def complete(self, generated: list[int]) -> bool:
        """Whether a row whose generated ids are `generated` is finished (only for `ends_outputs` stages)."""
        return False

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Stage | None:
        """The stage a config's values ask for, or None when its first setting is off."""
        first = cls.settings[0]
        if _is_one_of(values[first.name], first.off):
            return None
        return cls(**{declared.name: values[declared.name] for declared in cls.settings})


def declared_settings(stage: type[Stage]) -> tuple[Setting, ...]:
    """Build the `Setting`s from a stage dataclass's fields (in field order)."""
    built = []
    for index, item in enumerate(fields(stage)):  # type: ignore[arg-type]
        declared = dict(item.metadata.get("setting") or {})
        if not declared:
            raise TypeError(f"{stage.__name__}.{item.name} is not declared with setting(...)")
        has_default = item.default is not MISSING
        if (index == 0) == has_default:
            raise TypeError(f"{stage.__name__}.{item.name}: the first setting takes no default, later ones need one")
        default = declared["off"][0] if index == 0 else item.default
        built.append(Setting(name=item.name, stage=stage.name, default=default, **declared))
    if not built:
        raise TypeError(f"{stage.__name__} declares no settings")
    return tuple(built)


def generated_counts(logits: torch.Tensor, history: History) -> torch.Tensor:
    """(B, V): how often each token appears in each row's generated ids (the prompt not counted)."""
    generated = history.generated  # (B, G)
    counts = torch.zeros_like(logits)  # (B, V)
    return counts.scatter_add(1, generated, torch.ones_like(generated, dtype=logits.dtype))
