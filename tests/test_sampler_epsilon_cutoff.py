"""epsilon_cutoff: bit-for-bit parity with transformers' EpsilonLogitsWarper on random logits, hand tables,
purity, validation, its place in the chain, the `compare` word and the CLI flag."""

from __future__ import annotations

import math
import re

import pytest
import torch
from transformers.generation.logits_process import EpsilonLogitsWarper

from decodelab.cli import build_parser
from decodelab.cli.sampler_options import sampler_options
from decodelab.compare import parse_strategies
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, EpsilonCutoff
from sampler_cases import INF, no_history, random_logits

# --- 1. parity with transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "ties", "neg_inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("epsilon", [3e-4, 1e-3, 0.01, 0.1, 0.6])
def test_matches_transformers(epsilon, seed, kind):
    logits = random_logits(kind, seed)
    expected = EpsilonLogitsWarper(epsilon, min_tokens_to_keep=1)(torch.zeros(4, 0, dtype=torch.long), logits.clone())
    assert torch.equal(EpsilonCutoff(epsilon)(logits, no_history(4)), expected)  # exact; -inf == -inf


def test_parity_cases_are_not_vacuous():
    """The random rows see tokens removed, tokens kept beyond the top one, and (at 0.6) only the top protected."""
    for kind in ("plain", "ties", "neg_inf"):
        logits = random_logits(kind, 0)
        kept = torch.isfinite(EpsilonCutoff(0.01)(logits, no_history(4))).sum(dim=-1)
        assert ((kept > 1) & (kept < torch.isfinite(logits).sum(dim=-1))).all(), (kind, kept.tolist())
    only_top = EpsilonCutoff(0.6)(random_logits("plain", 0), no_history(4))
    assert torch.isfinite(only_top).sum(dim=-1).tolist() == [1, 1, 1, 1]  # nothing reaches 0.6: the top stays


# --- 2. hand-computed tables (probabilities after the stage) -------------------------------------------------------

FIVE = [0.5, 0.3, 0.15, 0.04, 0.01]
LN_FIVE = [math.log(p) for p in FIVE]  # logits whose softmax is FIVE
HAND = [
    # a token stays when p >= epsilon; the most likely token always stays
    (LN_FIVE, 0.05, [0.526316, 0.315789, 0.157895, 0, 0]),  # drops 0.04 and 0.01: [0.5, 0.3, 0.15] / 0.95
    (LN_FIVE, 0.2, [0.625, 0.375, 0, 0, 0]),  # [0.5, 0.3] / 0.8
    (LN_FIVE, 0.6, [1, 0, 0, 0, 0]),  # every p < 0.6: only the top token is kept
    (LN_FIVE, 0.005, FIVE),  # nothing below 0.005
    # a token removed earlier: softmax [0.830953, 0.112457, 0.041371, 0.015219, 0] -> ids 0, 1 stay
    ([4.0, 2.0, 1.0, 0.0, -INF], 0.05, [0.880797, 0.119203, 0, 0, 0]),
    # three tokens tied for the top (p 0.296923 each) all stay although each is below 0.5; id 3 (0.109232) goes
    ([1.0, 1.0, 1.0, 0.0], 0.5, [0.333333, 0.333333, 0.333333, 0]),
]


@pytest.mark.parametrize("logits, epsilon, expected", HAND)
def test_hand_computed_probabilities(logits, epsilon, expected):
    got = EpsilonCutoff(epsilon)(torch.tensor([logits], dtype=torch.float64), no_history()).softmax(dim=-1)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-6)


def test_probabilities_are_taken_among_the_tokens_left():
    """With id 4 removed earlier, p of id 2 is 0.041371 among the four left: kept at 0.04, removed at 0.05."""
    logits = torch.tensor([[4.0, 2.0, 1.0, 0.0, -INF]])
    assert torch.isfinite(EpsilonCutoff(0.05)(logits, no_history())).tolist() == [[True, True, False, False, False]]
    assert torch.isfinite(EpsilonCutoff(0.04)(logits, no_history())).tolist() == [[True, True, True, False, False]]


# --- 3. purity --------------------------------------------------------------------------------------------------


def test_does_not_change_its_input():
    logits = random_logits("neg_inf", 3)
    before = logits.clone()
    out = EpsilonCutoff(0.01)(logits, no_history(4))
    assert torch.equal(logits, before)
    assert out is not logits and out.data_ptr() != logits.data_ptr()
    assert not torch.equal(out, logits)  # it did remove something, so an in-place change would have shown


# --- 4. validation ----------------------------------------------------------------------------------------------

ALLOWED = "epsilon_cutoff must be in (0, 1)"
BAD = [
    (lambda: EpsilonCutoff(1.5), f"{ALLOWED}, got 1.5"),
    (lambda: EpsilonCutoff(1), f"{ALLOWED}, got 1"),
    (lambda: EpsilonCutoff(0.0), f"{ALLOWED}, got 0.0"),  # the stage itself needs a cutoff; configs say 0 = off
    (lambda: EpsilonCutoff(-0.1), f"{ALLOWED}, got -0.1"),
    (lambda: EpsilonCutoff(math.nan), f"{ALLOWED}, got nan"),
    (lambda: EpsilonCutoff("0.1"), f"{ALLOWED}, got '0.1'"),
    (lambda: GenerationConfig(epsilon_cutoff=1.5), f"{ALLOWED}, got 1.5"),
    (lambda: GenerationConfig(epsilon_cutoff=1.0), f"{ALLOWED}, got 1.0"),
    (lambda: GenerationConfig(epsilon_cutoff=-3e-4), f"{ALLOWED}, got -0.0003"),
    (lambda: GenerationConfig(epsilon_cutoff=math.inf), f"{ALLOWED}, got inf"),
    (
        lambda: GenerationConfig(epsilon_cutoff=1e-3, samplers=("temperature", "top_p")),
        "epsilon_cutoff is set but missing from the sampler order",
    ),
]


@pytest.mark.parametrize("make, message", BAD, ids=[message for _, message in BAD])
def test_bad_values_raise_one_clear_bad_input(make, message):
    with pytest.raises(BadInput, match=re.escape(message)) as raised:
        make()
    assert "\n" not in str(raised.value)


# --- 5. the chain, `compare` and the CLI ----------------------------------------------------------------------------


def test_default_order_runs_it_after_typical_p():
    assert DEFAULT_ORDER.index("typical_p") < DEFAULT_ORDER.index("epsilon_cutoff")


@pytest.mark.parametrize(
    "config, names",
    [
        (
            GenerationConfig(epsilon_cutoff=3e-4, typical_p=0.9, min_p=0.05, temperature=0.7),
            ("temperature", "min_p", "typical_p", "epsilon_cutoff"),
        ),
        (GenerationConfig(epsilon_cutoff=3e-4), ("epsilon_cutoff",)),
        (
            GenerationConfig(epsilon_cutoff=3e-4, top_k=5, samplers=("epsilon_cutoff", "top_k")),
            ("epsilon_cutoff", "top_k"),
        ),
        (GenerationConfig(greedy=True, epsilon_cutoff=3e-4), ()),  # a warper: greedy decoding leaves it out
        (GenerationConfig(temperature=0, epsilon_cutoff=3e-4), ()),
        (GenerationConfig(), ()),
        (GenerationConfig(epsilon_cutoff=None), ()),
        (GenerationConfig(epsilon_cutoff=0.0), ()),
        (GenerationConfig(epsilon_cutoff=0), ()),
    ],
)
def test_config_chain(config, names):
    assert tuple(stage.name for stage in config.chain().stages) == names


def test_compare_word():
    (strategy,) = parse_strategies("epsilon_cutoff:0.0009")
    assert (strategy.kind, strategy.options) == ("sample", {"epsilon_cutoff": 0.0009})
    assert [stage.name for stage in GenerationConfig(**strategy.options).chain().stages] == ["epsilon_cutoff"]


def test_cli_flag_reaches_the_config():
    args = build_parser().parse_args(["generate", "hello", "--epsilon-cutoff", "3e-4"])
    assert sampler_options(args, tokenizer=None) == {"epsilon_cutoff": 3e-4}
