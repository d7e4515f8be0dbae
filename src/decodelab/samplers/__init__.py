"""Sampler stages: small pure functions over (B, V) logits, composed into an ordered chain.

Each stage is a frozen dataclass in its own module under `decodelab.samplers.stages`, registered once with
`@register`; its fields are its settings, validated at construction with an error that quotes the bad value.
Calling a stage returns *new* logits and never changes its input. Stages that depend on what was written so
far read it from a `History`. Removed tokens get -inf, as in transformers, so the softmax of a stage's output
is exactly the distribution a sample is drawn from. The default order (transformers' for the stages it has)
is the stages' declared positions; `STAGES` lists them in that order.

Stage classes are importable from here by class name (`from decodelab.samplers import TopP`).
"""

from __future__ import annotations

from typing import Any

from decodelab.samplers.base import (
    FILTERED,
    MAX_BIAS,
    MAX_PENALTY,
    MIN_TEMPERATURE,
    History,
    Setting,
    Stage,
    setting,
)
from decodelab.samplers.chain import SamplerChain, StageReport
from decodelab.samplers.registry import (
    STAGES,
    all_settings,
    default_order,
    describe_stages,
    load_stages,
    register,
    settings_by_name,
)

load_stages()
DEFAULT_ORDER: tuple[str, ...] = default_order()

__all__ = [
    "DEFAULT_ORDER",
    "FILTERED",
    "MAX_BIAS",
    "MAX_PENALTY",
    "MIN_TEMPERATURE",
    "STAGES",
    "History",
    "SamplerChain",
    "Setting",
    "Stage",
    "StageReport",
    "all_settings",
    "default_order",
    "describe_stages",
    "register",
    "setting",
    "settings_by_name",
]


def __getattr__(name: str) -> Any:
    """A stage class by its class name: `decodelab.samplers.TopP`."""
    for stage in STAGES.values():
        if stage.__name__ == name:
            return stage
    raise AttributeError(f"module 'decodelab.samplers' has no attribute {name!r}")
