"""The registry of sampler stages: every stage module registers its class here, once.

Built-in stages live one per module in `decodelab.samplers.stages` and are found by importing that package's
modules; a third-party package registers its own through the `decodelab.samplers` entry-point group (each
entry point names a module or a stage class). Everything else reads the registry: `STAGES` (name -> class,
in default order), `default_order()`, `all_settings()`.
"""

from __future__ import annotations

import importlib
import pkgutil
from importlib.metadata import entry_points
from typing import TypeVar

from decodelab.samplers.base import Setting, Stage, declared_settings

STAGES: dict[str, type[Stage]] = {}  # stage name -> class, in default order once `load_stages` has run
ENTRY_POINT_GROUP = "decodelab.samplers"

StageClass = TypeVar("StageClass", bound=type[Stage])


def register(stage: StageClass) -> StageClass:
    """Class decorator (outside `@dataclass`): check the declaration and add the stage to the registry."""
    for attribute in ("name", "warper", "position"):
        if attribute not in vars(stage):
            raise TypeError(f"{stage.__name__} must declare `{attribute}` as a ClassVar")
    if stage.name in STAGES and STAGES[stage.name] is not stage:
        raise TypeError(f"two stages are named {stage.name!r}: {STAGES[stage.name].__name__} and {stage.__name__}")
    stage.settings = declared_settings(stage)
    taken = {s.name: s.stage for other in STAGES.values() if other is not stage for s in other.settings}
    for declared in stage.settings:
        if declared.name in taken:
            raise TypeError(f"setting {declared.name!r} of {stage.name} is already a setting of {taken[declared.name]}")
    STAGES[stage.name] = stage
    _sort()
    return stage


def _sort() -> None:
    ordered = sorted(STAGES.values(), key=lambda stage: (stage.position, stage.name))
    STAGES.clear()
    STAGES.update((stage.name, stage) for stage in ordered)


def load_stages() -> None:
    """Import every built-in stage module, then every entry point of the `decodelab.samplers` group."""
    from decodelab.samplers import stages

    for module in pkgutil.iter_modules(stages.__path__):
        importlib.import_module(f"{stages.__name__}.{module.name}")
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        loaded = entry.load()
        if isinstance(loaded, type) and issubclass(loaded, Stage) and loaded.name not in STAGES:
            register(loaded)


def default_order() -> tuple[str, ...]:
    return tuple(STAGES)


def all_settings() -> tuple[Setting, ...]:
    """Every stage's settings, stages in default order."""
    return tuple(declared for stage in STAGES.values() for declared in stage.settings)


def settings_by_name() -> dict[str, Setting]:
    return {declared.name: declared for declared in all_settings()}


def describe_stages() -> list[dict]:
    """The registry as JSON (for /api/info and the page): name, position, warper, settings, docs."""
    return [
        {
            "name": stage.name,
            "position": stage.position,
            "warper": stage.warper,
            "doc": " ".join((stage.__doc__ or "").strip().split("\n\n")[0].split()),
            "settings": [declared.describe() for declared in stage.settings],
        }
        for stage in STAGES.values()
    ]
