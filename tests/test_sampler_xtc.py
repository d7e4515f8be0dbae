"""XTC (exclude top choices, llama.cpp semantics): hand-computed tables, the seeded coin, and the decode loop."""

from __future__ import annotations

import re

import pytest
import torch

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import History
from decodelab.samplers.stages.xtc import XTC

PROBS = [0.4, 0.3, 0.2, 0.1]  # llama.cpp test-sampling's XTC distribution


def history(rows: int = 1, seed: int | None = 1) -> History:
    return History(torch.zeros(rows, 0, dtype=torch.long), 0, step_seeds=tuple(seed for _ in range(rows)))


def probs_after(stage: XTC, probs: list[float], seed: int | None = 1) -> list[float]:
    logits = torch.tensor([probs]).log()  # (1, 4)
    return [round(p, 6) for p in stage(logits, history(seed=seed)).softmax(dim=-1)[0].tolist()]


@pytest.mark.parametrize(
    "threshold, expected",
    [
        (0.09, [0, 0, 0, 1]),  # all four are top choices: only the least likely (0.1) stays
        (0.19, [0, 0, 0.666667, 0.333333]),  # 0.4, 0.3 go; 0.2 (least likely top choice) and 0.1 stay -> / 0.3
        (0.29, [0, 0.5, 0.333333, 0.166667]),  # 0.4 goes -> [0.3, 0.2, 0.1] / 0.6
        (0.39, [0.4, 0.3, 0.2, 0.1]),  # one top choice: nothing to exclude
        (0.6, [0.4, 0.3, 0.2, 0.1]),  # above 0.5 no two tokens can both be top choices
    ],
)
def test_llama_cpp_table(threshold, expected):
    """llama.cpp's tests/test-sampling.cpp cases (probability 1: the coin always says yes)."""
    assert probs_after(XTC(1.0, threshold), PROBS) == expected


def test_ties_keep_exactly_one_top_choice():
    # 0.3 and 0.3 tie as the least likely top choices: one of them stays (the lower id), so 0.3 / 0.4 = 0.75
    assert probs_after(XTC(1.0, 0.25), [0.3, 0.3, 0.3, 0.1]) == [0.75, 0, 0, 0.25]


def test_the_coin_fires_with_the_given_probability_and_is_reproducible():
    stage, logits = XTC(0.3, 0.19), torch.tensor([PROBS]).log()
    fired = [not torch.equal(stage(logits, history(seed=seed)), logits) for seed in range(2000)]
    assert 0.26 < sum(fired) / len(fired) < 0.34  # binomial(2000, 0.3): 5 standard deviations is 0.05
    again = [not torch.equal(stage(logits, history(seed=seed)), logits) for seed in range(2000)]
    assert fired == again


def test_no_draw_means_no_exclusion():
    """A step without a draw (a forced token) has no seed: XTC leaves the distribution alone."""
    assert probs_after(XTC(1.0, 0.09), PROBS, seed=None) == PROBS


def test_rows_flip_their_own_coins():
    stage, logits = XTC(0.5, 0.19), torch.tensor([PROBS]).log().expand(64, -1)
    seeds = tuple(range(64))
    out = stage(logits, History(torch.zeros(64, 0, dtype=torch.long), 0, step_seeds=seeds))
    changed = [not torch.equal(out[row], logits[row]) for row in range(64)]
    assert changed == [stage.coin(seed) <= 0.5 for seed in seeds] and 0 < sum(changed) < 64


def test_pure_and_greedy_leaves_it_out():
    logits = torch.tensor([PROBS]).log()
    before = logits.clone()
    XTC(1.0, 0.09)(logits, history())
    assert torch.equal(logits, before)
    assert [s.name for s in GenerationConfig(xtc_probability=0.5).chain().stages] == ["xtc"]
    assert GenerationConfig(xtc_probability=0.5, greedy=True).chain().stages == ()
    assert GenerationConfig(xtc_probability=0).chain().stages == ()


@pytest.mark.parametrize(
    "values, message",
    [
        ({"xtc_probability": 1.5}, "xtc_probability must be in [0, 1], got 1.5"),
        ({"xtc_probability": 0.5, "xtc_threshold": -0.1}, "xtc_threshold must be in [0, 1], got -0.1"),
    ],
)
def test_bad_values_name_the_setting(values, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        GenerationConfig(**values)


def test_generate_with_xtc_removes_the_top_choices(bundled):
    """In the decode loop every sampled step gets a seed: with probability 1 and a low threshold, every step's
    chain keeps just one of the likely tokens, and the stage report says what it removed."""
    result = bundled.generate("hello", xtc_probability=1.0, xtc_threshold=0.0, max_new_tokens=4, seed=3)
    for step in result.steps:
        [report] = step.stages
        assert report.name == "xtc" and report.kept == 1 and step.prob == 1.0
