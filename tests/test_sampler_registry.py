"""The sampler registry is the one place a stage's settings are declared: the config fields, CLI flags,
server request fields, compare words and the README's list all come from it."""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from decodelab.cli.generate import add_generation_options
from decodelab.compare import parse_strategies, sampling_words
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, STAGES, Stage, all_settings, catalog, register, setting
from decodelab.server.openai_schemas import ChatRequest, CompletionRequest

README = Path(__file__).resolve().parents[1] / "README.md"
SETTINGS = all_settings()


def test_readme_lists_every_stage_in_order():
    text = README.read_text(encoding="utf-8")
    assert catalog.block() in text, (
        "README's sampler list is stale: run `python -m decodelab.samplers.catalog README.md`"
    )
    listed = text[text.index(catalog.BEGIN) : text.index(catalog.END)]
    places = [listed.index(f"| `{name}` |") for name in DEFAULT_ORDER]
    assert places == sorted(places) and len(places) == len(STAGES)


def test_default_order_follows_declared_positions():
    positions = [STAGES[name].position for name in DEFAULT_ORDER]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


@pytest.mark.parametrize("declared", SETTINGS, ids=[s.name for s in SETTINGS])
def test_every_setting_reaches_every_consumer(declared):
    config_fields = {f.name: f for f in dataclasses.fields(GenerationConfig)}
    assert declared.name in config_fields
    assert GenerationConfig().to_dict()[declared.name] == declared.default
    parser = argparse.ArgumentParser()
    add_generation_options(parser)
    flags = {option for action in parser._actions for option in action.option_strings}
    assert "--" + declared.name.replace("_", "-") in flags
    assert declared.name in CompletionRequest.model_fields and declared.name in ChatRequest.model_fields
    if declared.kind in ("float", "int"):
        assert sampling_words()[declared.name] is declared


@pytest.mark.parametrize(
    "declared",
    [s for s in SETTINGS if s.kind in ("float", "int")],
    ids=[s.name for s in SETTINGS if s.kind in ("float", "int")],
)
def test_one_message_for_a_bad_value_everywhere(declared):
    """The config, the stage and the server say the same sentence for the same bad value (no numeric setting
    takes infinity: float32 logits would turn it into NaN)."""
    bad = math.inf
    stage = STAGES[declared.stage]
    first = stage.settings[0]
    on = {first.name: first.slider[1] if first.slider else 1}  # a value that turns the stage on
    others = {s.name: s.default for s in stage.settings[1:]}
    with pytest.raises(BadInput) as from_config:
        GenerationConfig(**{**on, declared.name: bad})
    with pytest.raises(BadInput) as from_stage:
        stage(**{**on, **others, declared.name: bad})
    assert str(from_config.value) == str(from_stage.value)
    assert str(from_config.value).startswith(f"{declared.name} ") and str(from_config.value).endswith("got inf")


def test_compare_words_set_the_settings():
    [strategy] = parse_strategies("temperature:0.7,top_k:40,no_repeat_ngram:3")
    assert strategy.options == {"temperature": 0.7, "top_k": 40, "no_repeat_ngram_size": 3}
    assert isinstance(strategy.options["top_k"], int)


def test_register_refuses_a_stage_without_its_declarations():
    @dataclass(frozen=True)
    class Unnamed(Stage):
        strength: float = setting(kind="float", allowed="must be > 0", check=lambda v: v > 0, help="how much")
        warper: ClassVar[bool] = True
        position: ClassVar[int] = 999

    with pytest.raises(TypeError, match="must declare `name`"):
        register(Unnamed)

    @dataclass(frozen=True)
    class Clash(Stage):
        top_p: float = setting(kind="float", allowed="must be > 0", check=lambda v: v > 0, help="again")
        name: ClassVar[str] = "clash"
        warper: ClassVar[bool] = True
        position: ClassVar[int] = 999

    with pytest.raises(TypeError, match="'top_p' of clash is already a setting of top_p"):
        register(Clash)
    assert "clash" not in STAGES
