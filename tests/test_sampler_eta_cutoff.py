"""eta_cutoff: bit-for-bit parity with transformers' EtaLogitsWarper on random logits, hand tables, purity,
validation, its place in the chain, the `compare` word, and the CLI flags of the three truncation stages."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers.generation.logits_process import EtaLogitsWarper

from decodelab.cli import build_parser
from decodelab.cli.sampler_options import sampler_options
from decodelab.compare import parse_strategies
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, EpsilonCutoff, EtaCutoff
from sampler_cases import INF, no_history, random_logits

# --- 1. parity with transformers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "ties", "neg_inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("epsilon", [3e-4, 2e-3, 0.01, 0.1, 0.5])
def test_matches_transformers(epsilon, seed, kind):
    logits = random_logits(kind, seed)
    expected = EtaLogitsWarper(epsilon, min_tokens_to_keep=1)(torch.zeros(4, 0, dtype=torch.long), logits.clone())
    assert torch.equal(EtaCutoff(epsilon)(logits, no_history(4)), expected)  # exact; -inf == -inf


def test_parity_cases_are_not_vacuous():
    """The random rows see tokens removed and tokens kept beyond the top one."""
    for kind in ("plain", "ties", "neg_inf"):
        logits = random_logits(kind, 0)
        kept = torch.isfinite(EtaCutoff(0.1)(logits, no_history(4))).sum(dim=-1)
        assert ((kept > 1) & (kept < torch.isfinite(logits).sum(dim=-1))).all(), (kind, kept.tolist())


# --- 2. hand-computed tables (probabilities after the stage) -------------------------------------------------------

LN_FIVE = [math.log(p) for p in (0.5, 0.3, 0.15, 0.04, 0.01)]  # entropy 1.167140 nats, exp(-H) 0.311256
LN_PEAKED = [math.log(p) for p in (0.9, 0.05, 0.03, 0.02)]  # entropy 0.428048 nats
HAND = [
    # eta = min(epsilon, sqrt(epsilon) * exp(-H)); a token stays when p >= eta; the top token always stays
    (LN_FIVE, 0.1, [0.526316, 0.315789, 0.157895, 0, 0]),  # eta 0.098428 (the entropy term): drops 0.04, 0.01
    (LN_FIVE, 0.2, [0.526316, 0.315789, 0.157895, 0, 0]),  # eta 0.139198 < 0.15: keeps what epsilon 0.2 drops
    (LN_PEAKED, 0.04, [0.947368, 0.052632, 0, 0]),  # sqrt term 0.130356, so eta = epsilon 0.04: [0.9, 0.05] / 0.95
    # a token removed earlier adds nothing to the entropy (0.595087) and has p 0
    ([4.0, 2.0, 1.0, 0.0, -INF], 0.3, [1, 0, 0, 0, 0]),  # sqrt term 0.302077: eta 0.3, only p 0.830953 reaches it
    ([4.0, 2.0, 1.0, 0.0, -INF], 0.05, [0.880797, 0.119203, 0, 0, 0]),  # sqrt term 0.123322: eta 0.05
    ([1.0, 1.0, 1.0, 0.0], 0.5, [0.333333, 0.333333, 0.333333, 0]),  # ties with the top token all stay
]


@pytest.mark.parametrize("logits, epsilon, expected", HAND)
def test_hand_computed_probabilities(logits, epsilon, expected):
    got = EtaCutoff(epsilon)(torch.tensor([logits], dtype=torch.float64), no_history()).softmax(dim=-1)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-6)


def test_a_flat_distribution_lowers_the_cutoff_below_epsilon():
    """On LN_FIVE, epsilon 0.2 alone drops p = 0.15; eta's cutoff 0.139198 keeps it."""
    logits = torch.tensor([LN_FIVE])
    assert torch.isfinite(EpsilonCutoff(0.2)(logits, no_history())).sum() == 2
    assert torch.isfinite(EtaCutoff(0.2)(logits, no_history())).sum() == 3


# --- 3. purity --------------------------------------------------------------------------------------------------


def test_does_not_change_its_input():
    logits = random_logits("neg_inf", 3)
    before = logits.clone()
    out = EtaCutoff(0.1)(logits, no_history(4))
    assert torch.equal(logits, before)
    assert out is not logits and out.data_ptr() != logits.data_ptr()
    assert not torch.equal(out, logits)  # it did remove something, so an in-place change would have shown


# --- 4. validation ----------------------------------------------------------------------------------------------

ALLOWED = "eta_cutoff must be in (0, 1)"
BAD = [
    (lambda: EtaCutoff(1.5), f"{ALLOWED}, got 1.5"),
    (lambda: EtaCutoff(1), f"{ALLOWED}, got 1"),
    (lambda: EtaCutoff(0.0), f"{ALLOWED}, got 0.0"),  # the stage itself needs a cutoff; configs say 0 = off
    (lambda: EtaCutoff(-0.1), f"{ALLOWED}, got -0.1"),
    (lambda: EtaCutoff(math.nan), f"{ALLOWED}, got nan"),
    (lambda: EtaCutoff("0.1"), f"{ALLOWED}, got '0.1'"),
    (lambda: GenerationConfig(eta_cutoff=1.5), f"{ALLOWED}, got 1.5"),
    (lambda: GenerationConfig(eta_cutoff=1.0), f"{ALLOWED}, got 1.0"),
    (lambda: GenerationConfig(eta_cutoff=-2e-3), f"{ALLOWED}, got -0.002"),
    (lambda: GenerationConfig(eta_cutoff=math.inf), f"{ALLOWED}, got inf"),
    (
        lambda: GenerationConfig(eta_cutoff=2e-3, samplers=("temperature", "top_p")),
        "eta_cutoff is set but missing from the sampler order",
    ),
]


@pytest.mark.parametrize("make, message", BAD, ids=[message for _, message in BAD])
def test_bad_values_raise_one_clear_bad_input(make, message):
    with pytest.raises(BadInput, match=re.escape(message)) as raised:
        make()
    assert "\n" not in str(raised.value)


# --- 5. the chain, `compare` and the CLI ----------------------------------------------------------------------------


def test_default_order_runs_it_after_epsilon_cutoff():
    assert DEFAULT_ORDER.index("typical_p") < DEFAULT_ORDER.index("epsilon_cutoff") < DEFAULT_ORDER.index("eta_cutoff")


@pytest.mark.parametrize(
    "config, names",
    [
        (
            GenerationConfig(eta_cutoff=2e-3, epsilon_cutoff=3e-4, typical_p=0.9, temperature=0.7),
            ("temperature", "typical_p", "epsilon_cutoff", "eta_cutoff"),
        ),
        (GenerationConfig(eta_cutoff=2e-3), ("eta_cutoff",)),
        (GenerationConfig(eta_cutoff=2e-3, top_k=5, samplers=("eta_cutoff", "top_k")), ("eta_cutoff", "top_k")),
        (GenerationConfig(greedy=True, eta_cutoff=2e-3), ()),  # a warper: greedy decoding leaves it out
        (GenerationConfig(temperature=0, eta_cutoff=2e-3), ()),
        (GenerationConfig(), ()),
        (GenerationConfig(eta_cutoff=None), ()),
        (GenerationConfig(eta_cutoff=0.0), ()),
        (GenerationConfig(eta_cutoff=0), ()),
    ],
)
def test_config_chain(config, names):
    assert tuple(stage.name for stage in config.chain().stages) == names


def test_compare_word():
    (strategy,) = parse_strategies("eta_cutoff:0.002")
    assert (strategy.kind, strategy.options) == ("sample", {"eta_cutoff": 0.002})
    assert [stage.name for stage in GenerationConfig(**strategy.options).chain().stages] == ["eta_cutoff"]


def test_cli_flag_reaches_the_config():
    args = build_parser().parse_args(["generate", "hello", "--eta-cutoff", "2e-3"])
    assert sampler_options(args, tokenizer=None) == {"eta_cutoff": 2e-3}


def test_generate_help_lists_the_truncation_flags():
    """One run of the installed command for the three stages added together: top-nσ, epsilon and eta."""
    command = Path(sys.executable).with_name("decodelab")
    shown = subprocess.run(
        [str(command), "generate", "--help"], capture_output=True, text=True, check=True, timeout=300
    ).stdout
    for flag in ("--top-n-sigma N", "--epsilon-cutoff EPSILON", "--eta-cutoff EPSILON"):
        assert flag in shown, flag
