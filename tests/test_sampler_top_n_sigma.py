"""top_n_sigma: a float64 reference on random logits, temperature invariance, llama.cpp's hand tables, purity,
validation, its place in the chain, the `compare` word and the CLI flag."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from decodelab.cli import build_parser
from decodelab.cli.sampler_options import sampler_options
from decodelab.compare import parse_strategies
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import DEFAULT_ORDER, TopNSigma
from sampler_cases import INF, no_history, random_logits


def reference_top_n_sigma(logits: torch.Tensor, n: float) -> torch.Tensor:
    """The paper's rule written plainly, row by row in numpy float64: population std of the finite logits."""
    rows = []
    for row in logits.numpy():
        finite = row[np.isfinite(row)].astype(np.float64)
        threshold = finite.max() - n * finite.std(ddof=0)
        rows.append(np.where(row.astype(np.float64) < threshold, -np.inf, row))
    return torch.from_numpy(np.stack(rows).astype(np.float32))


# --- 1. random logits against the reference ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "ties", "neg_inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [0.5, 1.0, 1.7, 3.0])
def test_matches_a_float64_reference(n, seed, kind):
    logits = random_logits(kind, seed)
    got = TopNSigma(n)(logits, no_history(4))
    assert torch.equal(got, reference_top_n_sigma(logits, n))
    assert got.dtype == logits.dtype


def test_reference_cases_are_not_vacuous():
    """On the random rows the cut removes tokens and keeps more than the top one: both sides are exercised."""
    for kind in ("plain", "ties", "neg_inf"):
        kept = torch.isfinite(TopNSigma(1.0)(random_logits(kind, 0), no_history(4))).sum(dim=-1)
        finite = torch.isfinite(random_logits(kind, 0)).sum(dim=-1)
        assert ((kept > 1) & (kept < finite)).all(), (kind, kept.tolist())


@pytest.mark.parametrize("temperature", [0.5, 2.0])
@pytest.mark.parametrize("kind", ["plain", "ties", "neg_inf"])
def test_kept_set_does_not_depend_on_temperature(temperature, kind):
    """Dividing every logit by T divides max - logit and the std alike: the same tokens survive."""
    logits = random_logits(kind, 4)
    alone = TopNSigma(1.0)(logits, no_history(4))
    chain = GenerationConfig(temperature=temperature, top_n_sigma=1.0).chain()
    assert [stage.name for stage in chain.stages] == ["temperature", "top_n_sigma"]
    assert torch.equal(torch.isfinite(chain(logits, no_history(4))), torch.isfinite(alone))


# --- 2. hand-computed tables (probabilities after the stage) -------------------------------------------------------

LN_PROBS = [math.log(p) for p in (0.1, 0.2, 0.3, 0.4)]  # llama.cpp test-sampling's distribution, as logits
# LN_PROBS: mean -1.508072, population std 0.520626, max -0.916291
# [3, 2, 1, 0, -inf, -inf]: the -inf entries are left out of the statistics: mean 1.5, population std 1.118034
WITH_REMOVED = [3.0, 2.0, 1.0, 0.0, -INF, -INF]
HAND = [
    (LN_PROBS, 1.0, [0, 0, 0.428571, 0.571429]),  # threshold -1.436917: ids 2, 3 (llama.cpp's own test)
    (LN_PROBS, 3.0, [0.1, 0.2, 0.3, 0.4]),  # threshold -2.478170: all (llama.cpp's own test)
    (WITH_REMOVED, 1.0, [0.731059, 0.268941, 0, 0, 0, 0]),  # threshold 1.881966: ids 0, 1
    # threshold 1.099342 keeps ids 0, 1; with the sample std (1.290994) it would be 0.805309 and keep id 2
    (WITH_REMOVED, 1.7, [0.731059, 0.268941, 0, 0, 0, 0]),
    (WITH_REMOVED, 3.0, [0.643914, 0.236883, 0.087144, 0.032059, 0, 0]),  # threshold -0.354102: ids 0-3
    ([1.0, 1.0, 1.0, 1.0], 1.0, [0.25, 0.25, 0.25, 0.25]),  # std 0: threshold = max, all tied tokens stay
]


@pytest.mark.parametrize("logits, n, expected", HAND)
def test_hand_computed_probabilities(logits, n, expected):
    got = TopNSigma(n)(torch.tensor([logits], dtype=torch.float64), no_history()).softmax(dim=-1)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-6)


def test_rows_with_one_or_no_finite_logit_are_unchanged():
    logits = torch.tensor([[-INF, 2.0, -INF, -INF], [-INF] * 4])
    assert torch.equal(TopNSigma(1.0)(logits, no_history(2)), logits)


@pytest.mark.parametrize("n", [0.0, -1.0])
def test_n_at_most_zero_is_a_no_op_stage(n):
    """As llama.cpp's `llama_sampler_init_top_n_sigma(n <= 0)`: nothing is removed (and a new tensor returned)."""
    logits = random_logits("plain", 0)
    got = TopNSigma(n)(logits, no_history(4))
    assert torch.equal(got, logits) and got.data_ptr() != logits.data_ptr()


# --- 3. purity --------------------------------------------------------------------------------------------------


def test_does_not_change_its_input():
    logits = random_logits("neg_inf", 3)
    before = logits.clone()
    out = TopNSigma(1.0)(logits, no_history(4))
    assert torch.equal(logits, before)
    assert out is not logits and out.data_ptr() != logits.data_ptr()
    assert not torch.equal(out, logits)  # it did remove something, so an in-place change would have shown


# --- 4. validation ----------------------------------------------------------------------------------------------

ALLOWED = "top_n_sigma must be a finite number (0 or less turns it off)"
BAD = [
    (lambda: TopNSigma(math.nan), f"{ALLOWED}, got nan"),
    (lambda: TopNSigma(math.inf), f"{ALLOWED}, got inf"),
    (lambda: TopNSigma("1.0"), f"{ALLOWED}, got '1.0'"),
    (lambda: TopNSigma(True), f"{ALLOWED}, got True"),
    (lambda: GenerationConfig(top_n_sigma=math.inf), f"{ALLOWED}, got inf"),
    (lambda: GenerationConfig(top_n_sigma="1.0"), f"{ALLOWED}, got '1.0'"),
    (
        lambda: GenerationConfig(top_n_sigma=1.0, samplers=("temperature", "top_k")),
        "top_n_sigma is set but missing from the sampler order",
    ),
]


@pytest.mark.parametrize("make, message", BAD, ids=[message for _, message in BAD])
def test_bad_values_raise_one_clear_bad_input(make, message):
    with pytest.raises(BadInput, match=re.escape(message)) as raised:
        make()
    assert "\n" not in str(raised.value)


# --- 5. the chain, `compare` and the CLI ----------------------------------------------------------------------------


def test_default_order_runs_it_after_temperature_and_before_top_k():
    assert DEFAULT_ORDER.index("temperature") < DEFAULT_ORDER.index("top_n_sigma") < DEFAULT_ORDER.index("top_k")


@pytest.mark.parametrize(
    "config, names",
    [
        (
            GenerationConfig(top_p=0.9, top_k=5, top_n_sigma=1.0, temperature=0.7),
            ("temperature", "top_n_sigma", "top_k", "top_p"),
        ),
        (GenerationConfig(top_n_sigma=1.0), ("top_n_sigma",)),
        (
            GenerationConfig(top_n_sigma=1.0, samplers=("top_n_sigma", "temperature"), temperature=0.7),
            ("top_n_sigma", "temperature"),
        ),
        (GenerationConfig(greedy=True, top_n_sigma=1.0), ()),  # a warper: greedy decoding leaves it out
        (GenerationConfig(temperature=0, top_n_sigma=1.0), ()),
        (GenerationConfig(), ()),
        (GenerationConfig(top_n_sigma=None), ()),
        (GenerationConfig(top_n_sigma=0.0), ()),
        (GenerationConfig(top_n_sigma=0), ()),
        (GenerationConfig(top_n_sigma=-1.0), ()),  # llama.cpp's default, meaning off
        (GenerationConfig(top_n_sigma=-0.5), ()),
    ],
)
def test_config_chain(config, names):
    assert tuple(stage.name for stage in config.chain().stages) == names


def test_compare_word():
    (strategy,) = parse_strategies("top_n_sigma:1.0")
    assert (strategy.kind, strategy.options) == ("sample", {"top_n_sigma": 1.0})
    both = parse_strategies("temperature:1.5,top_n_sigma:1")[0].options
    assert [stage.name for stage in GenerationConfig(**both).chain().stages] == ["temperature", "top_n_sigma"]


def test_cli_flag_reaches_the_config():
    args = build_parser().parse_args(["generate", "hello", "--top-n-sigma", "1.5"])
    assert sampler_options(args, tokenizer=None) == {"top_n_sigma": 1.5}
