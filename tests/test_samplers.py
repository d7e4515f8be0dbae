"""Sampler stages: parity with transformers' logits processors, hand-computed 4-token tables, purity,
validation messages, chain reports, and the statistics of the seeded draw in `select`."""

from __future__ import annotations

import math
import re

import pytest
import torch
from transformers.generation import logits_process as hf

from decodelab.decoding import select
from decodelab.errors import BadInput, DecodelabError
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import (
    FrequencyPenalty,
    History,
    LogitBias,
    MinP,
    NoRepeatNGram,
    PresencePenalty,
    RepetitionPenalty,
    SamplerChain,
    Temperature,
    TopK,
    TopP,
    TypicalP,
)
from sampler_cases import INF, no_history, random_logits

PROBS = [0.1, 0.2, 0.3, 0.4]  # llama.cpp test-sampling's 4-token distribution


def log_probs(probs=PROBS) -> torch.Tensor:
    return torch.tensor([probs], dtype=torch.float64).log()  # (1, 4)


def random_history(seed: int) -> History:
    """(4, 40) ids drawn from only 8 tokens, so repeats and repeated n-grams are common."""
    ids = torch.randint(0, 8, (4, 40), generator=torch.Generator().manual_seed(100 + seed))
    return History(ids, prompt_length=10)


# --- 1. parity with transformers -------------------------------------------------------------------------------

PARITY = (
    [(Temperature(t), hf.TemperatureLogitsWarper(t)) for t in (0.5, 0.8, 1.3, 2.0)]
    + [(TopK(k), hf.TopKLogitsWarper(k)) for k in (1, 5, 50)]
    + [(TopP(p), hf.TopPLogitsWarper(p)) for p in (0.1, 0.5, 0.9, 1.0)]
    + [(MinP(p), hf.MinPLogitsWarper(p)) for p in (0.0, 0.05, 0.3)]
    + [(TypicalP(p), hf.TypicalLogitsWarper(p)) for p in (0.2, 0.9)]
    + [(RepetitionPenalty(p), hf.RepetitionPenaltyLogitsProcessor(p)) for p in (0.8, 1.3)]
    + [(NoRepeatNGram(n), hf.NoRepeatNGramLogitsProcessor(n)) for n in (1, 2, 3)]
)


@pytest.mark.parametrize("kind", ["plain", "ties", "neg_inf"])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ours, theirs", PARITY, ids=[repr(ours) for ours, _ in PARITY])
def test_stage_matches_transformers(ours, theirs, kind, seed):
    logits, history = random_logits(kind, seed), random_history(seed)
    expected = theirs(history.ids.clone(), logits.clone())
    got = ours(logits, history)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # -inf == -inf counts as equal


def test_parity_cases_are_not_vacuous():
    """The random inputs really exercise removals: each filtering stage bans something somewhere."""
    logits, history = random_logits("plain", 0), random_history(0)
    for stage in (TopK(5), TopP(0.5), MinP(0.3), TypicalP(0.2), NoRepeatNGram(2), NoRepeatNGram(3)):
        assert torch.isinf(stage(logits, history)).any(), stage


# --- 2. hand-computed 4-token tables (probabilities after the stage) ----------------------------------------------

HAND = [
    # top_p keeps the fewest most likely tokens reaching p: 0.4 + 0.3 = 0.7 -> [0.3, 0.4] / 0.7
    (TopP(0.7), [0, 0, 0.428571, 0.571429]),
    (TopP(0.65), [0, 0, 0.428571, 0.571429]),  # 0.4 < 0.65 <= 0.7
    (TopP(0.75), [0, 0.222222, 0.333333, 0.444444]),  # 0.7 < 0.75 <= 0.9 -> [0.2, 0.3, 0.4] / 0.9
    (TopP(1.0), [0.1, 0.2, 0.3, 0.4]),
    (TopK(1), [0, 0, 0, 1]),
    (TopK(2), [0, 0, 0.428571, 0.571429]),  # [0.3, 0.4] / 0.7
    (TopK(3), [0, 0.222222, 0.333333, 0.444444]),  # [0.2, 0.3, 0.4] / 0.9
    (TopK(10), [0.1, 0.2, 0.3, 0.4]),  # k beyond the vocabulary keeps all
    (MinP(0.76), [0, 0, 0, 1]),  # threshold 0.76 * 0.4 = 0.304 > 0.3: only 0.4 stays
    (MinP(0.74), [0, 0, 0.428571, 0.571429]),  # threshold 0.296 <= 0.3
    (MinP(0.45), [0, 0.222222, 0.333333, 0.444444]),  # threshold 0.18: drops only 0.1
    (MinP(0.0), [0.1, 0.2, 0.3, 0.4]),
    # typical: entropy H = 1.279854; |-ln p - H| = [1.0227, 0.3296, 0.0759, 0.3636] -> order ids 2, 1, 3, 0,
    # cumulative mass 0.3, 0.5, 0.9, 1.0; keep up to the first position whose mass reaches typical_p
    (TypicalP(0.2), [0, 0, 1, 0]),  # 0.3 >= 0.2: id 2 alone
    (TypicalP(0.4), [0, 0.4, 0.6, 0]),  # 0.5 >= 0.4: ids 2, 1 -> [0.2, 0.3] / 0.5
    (TypicalP(0.8), [0, 0.222222, 0.333333, 0.444444]),  # 0.9 >= 0.8: ids 2, 1, 3 -> / 0.9
    # temperature T: p ** (1/T), renormalised
    (Temperature(2.0), [0.162700, 0.230093, 0.281805, 0.325401]),  # sqrt p = .316228 .447214 .547723 .632456 / 1.943619
    (Temperature(0.5), [0.033333, 0.133333, 0.3, 0.533333]),  # p^2 = .01 .04 .09 .16 / 0.30
]


@pytest.mark.parametrize("stage, expected", HAND, ids=[repr(stage) for stage, _ in HAND])
def test_hand_computed_probabilities(stage, expected):
    got = stage(log_probs(), no_history()).softmax(dim=-1)
    torch.testing.assert_close(got, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-6)


# History [3, 3, 0 | 3, 1, 1]: prompt of 3, generated [3, 1, 1] (token 0 is only in the prompt).
PENALTY_HISTORY = History(torch.tensor([[3, 3, 0, 3, 1, 1]]), prompt_length=3)
LOGIT_CASES = [
    (PresencePenalty(0.5), [1.0, 1.5, 3.0, 3.5]),  # ids 1 and 3 were generated: -0.5 each
    (PresencePenalty(-1.0), [1.0, 3.0, 3.0, 5.0]),
    (FrequencyPenalty(0.5), [1.0, 1.0, 3.0, 3.5]),  # generated counts [0, 2, 0, 1] * 0.5
    (FrequencyPenalty(-1.0), [1.0, 4.0, 3.0, 5.0]),
    (LogitBias({0: 2.0, 2: -1.0}), [3.0, 2.0, 2.0, 4.0]),
    (LogitBias({1: -INF}), [1.0, -INF, 3.0, 4.0]),  # a ban
    # repetition counts the prompt too: ids 0, 1, 3 are divided by 2 (3 / 2 = 1.5 would be id 2: untouched)
    (RepetitionPenalty(2.0), [0.5, 1.0, 3.0, 2.0]),
    (GenerationConfig(logit_bias={0: 2.0}, ban=(1,)).chain(), [3.0, -INF, 3.0, 4.0]),
]


@pytest.mark.parametrize("stage, expected", LOGIT_CASES, ids=[repr(stage) for stage, _ in LOGIT_CASES])
def test_hand_computed_logits(stage, expected):
    got = stage(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), PENALTY_HISTORY)
    torch.testing.assert_close(got, torch.tensor([expected]), rtol=0, atol=1e-6)


def test_repetition_penalty_multiplies_negative_logits():
    got = RepetitionPenalty(2.0)(torch.tensor([[-1.0, -2.0, 3.0]]), History(torch.tensor([[0, 2]]), 0))
    assert got.tolist() == [[-2.0, -2.0, 1.5]]  # -1 * 2, untouched, 3 / 2


NGRAM_CASES = [
    # (ids, n, banned ids) over a vocabulary of 5
    ([0, 1, 2, 0, 1], 3, {2}),  # suffix (0, 1) was followed by 2
    ([0, 1, 2, 0, 1, 3, 1], 2, {2, 3}),  # suffix (1,) was followed by 2 and by 3
    ([0, 1, 2, 0, 1, 3, 1], 3, set()),  # suffix (3, 1) never occurred before
    ([0, 1, 2, 0, 1, 3, 1], 1, {0, 1, 2, 3}),  # unigrams: every seen token
    ([4, 4], 3, set()),  # shorter than n: nothing to repeat
    ([4, 4], 2, {4}),
]


@pytest.mark.parametrize("ids, n, banned", NGRAM_CASES)
def test_no_repeat_ngram_by_hand(ids, n, banned):
    got = NoRepeatNGram(n)(torch.zeros(1, 5), History(torch.tensor([ids]), 0))
    assert {i for i in range(5) if got[0, i] == -INF} == banned
    assert all(got[0, i] == 0 for i in range(5) if i not in banned)


# --- 3. purity: no stage changes its input ---------------------------------------------------------------------

PURE = [
    Temperature(0.7),
    TopK(3),
    TopP(0.5),
    MinP(0.2),
    TypicalP(0.5),
    RepetitionPenalty(1.3),
    PresencePenalty(1.0),
    FrequencyPenalty(0.5),
    NoRepeatNGram(2),
    NoRepeatNGram(9),
    LogitBias({1: 2.0, 3: -INF}),
    SamplerChain((LogitBias({0: -INF}), RepetitionPenalty(1.3), Temperature(0.7), TopK(5), TopP(0.9), MinP(0.1))),
]


@pytest.mark.parametrize("stage", PURE, ids=repr)
def test_stage_does_not_change_its_input(stage):
    logits, history = random_logits("plain", 3)[:, :20].contiguous(), History(torch.tensor([[1, 2, 1, 2]] * 4), 1)
    logits_before, ids_before = logits.clone(), history.ids.clone()
    out = stage(logits, history)
    assert torch.equal(logits, logits_before) and torch.equal(history.ids, ids_before)
    assert out is not logits and out.data_ptr() != logits.data_ptr()
    acts = not (
        isinstance(stage, NoRepeatNGram) and stage.no_repeat_ngram_size > 5
    )  # a 9-gram cannot repeat in 4 ids: a no-op
    assert torch.equal(out, logits) != acts  # so an in-place change could not have gone unnoticed


# --- 4. validation ---------------------------------------------------------------------------------------------

BAD = [
    (lambda: TopP(1.5), "top_p must be in (0, 1], got 1.5"),
    (lambda: TopP(math.nan), "top_p must be in (0, 1], got nan"),
    (lambda: Temperature(-1), "temperature must be at least 0.0001 (0 means greedy), got -1"),
    (lambda: Temperature(1e-40), "temperature must be at least 0.0001 (0 means greedy), got 1e-40"),
    (lambda: TopK(0), "top_k must be a whole number >= 1 (0 or unset keeps every token), got 0"),
    (lambda: TopK(2.5), "top_k must be a whole number >= 1 (0 or unset keeps every token), got 2.5"),
    (lambda: MinP(2), "min_p must be in [0, 1], got 2"),
    (lambda: TypicalP(0), "typical_p must be in (0, 1], got 0"),
    (lambda: RepetitionPenalty(0), "repetition_penalty must be in [0.0001, 10000], got 0"),
    (lambda: RepetitionPenalty(5e-324), "repetition_penalty must be in [0.0001, 10000], got 5e-324"),
    (lambda: LogitBias({28: 1e39}), "to biases in [-1e+06, 1e+06] or -inf, got {28: 1e+39}"),
    (lambda: LogitBias({28: math.nan}), "to biases in [-1e+06, 1e+06] or -inf, got {28: nan}"),
    (lambda: GenerationConfig(top_n=101), "top_n must be at most 100, got 101"),
    (lambda: GenerationConfig(ban=(2**40,)), "ban must be a list of token ids (whole numbers from 0)"),
    (lambda: PresencePenalty(3), "presence_penalty must be in [-2, 2], got 3"),
    (lambda: FrequencyPenalty(-2.5), "frequency_penalty must be in [-2, 2], got -2.5"),
    (lambda: NoRepeatNGram(0), "no_repeat_ngram_size must be a whole number >= 1 (0 turns it off), got 0"),
    (
        lambda: LogitBias({-1: 1.0}),
        "logit_bias must map token ids (whole numbers from 0) to biases in [-1e+06, 1e+06] or -inf, got {-1: 1.0}",
    ),
    (
        lambda: LogitBias({2**70: 1.0}),
        "logit_bias must map token ids (whole numbers from 0) to biases in [-1e+06, 1e+06] or -inf, got {1180591620717411303424: 1.0}",
    ),
    (lambda: GenerationConfig(temperature=-1), "temperature must be at least 0.0001 (0 means greedy), got -1"),
    (lambda: GenerationConfig(top_p=1.5), "top_p must be in (0, 1], got 1.5"),
    (lambda: GenerationConfig(samplers=("top_q",)), "unknown sampler 'top_q'"),
    (lambda: GenerationConfig(top_k=5, samplers=("temperature",)), "top_k is set but missing from the sampler order"),
    (lambda: GenerationConfig(max_new_tokens=0), "max_new_tokens must be a whole number >= 1, got 0"),
]


@pytest.mark.parametrize("make, message", BAD, ids=[message for _, message in BAD])
def test_bad_parameters_raise_bad_input(make, message):
    with pytest.raises(BadInput, match=re.escape(message)) as raised:
        make()
    assert isinstance(raised.value, DecodelabError) and "\n" not in str(raised.value)


# --- 5. chain composition and reports ----------------------------------------------------------------------------


def test_traced_reports_kept_and_removed_mass():
    logits = torch.tensor([PROBS, [0.25] * 4, [0.5, 0.5, 0, 0]]).log()  # row 3 arrives with two tokens removed
    final, reports = SamplerChain((Temperature(0.5), TopK(2))).traced(logits, no_history(3))
    summary = [[(r.name, r.kept, round(r.removed_mass, 6)) for r in row] for row in reports]
    assert summary == [
        # T=0.5 gives [.01, .04, .09, .16] / .30; top_k=2 then removes 1/30 + 4/30 = 0.166667
        [("temperature", 4, 0.0), ("top_k", 2, 0.166667)],
        [("temperature", 4, 0.0), ("top_k", 4, 0.0)],  # four-way tie with the 2nd: all kept
        [("temperature", 2, 0.0), ("top_k", 2, 0.0)],  # already-removed tokens are not counted again
    ]
    assert torch.equal(final, SamplerChain((Temperature(0.5), TopK(2)))(logits, no_history(3)))
    assert not any(r.removed_top for row in reports for r in row)  # top-k never removes the most likely token


def test_a_report_says_when_a_stage_removed_the_most_likely_token():
    logits = torch.tensor([PROBS, PROBS]).log()  # token 3 most likely in both rows
    _, reports = SamplerChain((LogitBias({}, (3,)),)).traced(logits, no_history(2))
    assert [row[0].removed_top for row in reports] == [True, True]
    _, reports = SamplerChain((LogitBias({}, (0,)),)).traced(logits, no_history(2))
    assert [row[0].removed_top for row in reports] == [False, False]


@pytest.mark.parametrize(
    "config, names",
    [
        (GenerationConfig(greedy=True, top_k=5), ()),
        (GenerationConfig(temperature=0, top_p=0.5, min_p=0.1), ()),
        (
            GenerationConfig(greedy=True, top_k=5, temperature=0.7, repetition_penalty=1.3, no_repeat_ngram_size=2),
            ("repetition_penalty", "no_repeat_ngram"),
        ),
        (
            GenerationConfig(top_k=5, temperature=0.7, repetition_penalty=1.3),
            ("repetition_penalty", "temperature", "top_k"),
        ),
        (GenerationConfig(top_k=5, temperature=0.7, samplers=("top_k", "temperature")), ("top_k", "temperature")),
        (GenerationConfig(), ()),  # temperature 1 and nothing else set: no stage at all
    ],
)
def test_config_chain_stages(config, names):
    assert tuple(stage.name for stage in config.chain().stages) == names


# --- 6. the seeded draw ------------------------------------------------------------------------------------------

SIX = torch.tensor([[0.35, 0.25, 0.15, 0.12, 0.08, 0.05]]).log()  # (1, 6)
CHI2_CRITICAL_0_001 = {1: 10.828, 2: 13.816, 3: 16.266, 4: 18.467, 5: 20.515}  # chi-square quantile at p = 0.001


def test_draws_follow_the_chain_distribution():
    final = SamplerChain((Temperature(0.8), TopP(0.9)))(SIX, no_history())
    probs = final.softmax(dim=-1)[0].double()  # (6,)
    kept = probs > 0
    assert kept.tolist() == [True, True, True, True, False, False]  # tokens 4 and 5 are cut by top_p
    draws = 4000
    counts = torch.zeros(6, dtype=torch.float64)
    for position in range(draws):
        counts[int(select(final, greedy=False, row_seeds=[1234], position=position)[0])] += 1
    assert counts[~kept].sum() == 0  # a removed token is never drawn
    expected = draws * probs[kept]
    statistic = float(((counts[kept] - expected) ** 2 / expected).sum())
    assert statistic < CHI2_CRITICAL_0_001[int(kept.sum()) - 1], (counts.tolist(), expected.tolist())


def test_draws_are_reproducible_per_seed_and_position():
    final = SamplerChain((Temperature(0.8), TopP(0.9)))(SIX, no_history())

    def sequence(seed: int) -> list[int]:
        return [int(select(final, False, [seed], position)[0]) for position in range(50)]

    assert sequence(7) == sequence(7)
    assert sequence(7) != sequence(8)
    both = [select(final.expand(2, -1), False, [7, 8], position).tolist() for position in range(50)]
    assert [pair for pair in both] == [list(pair) for pair in zip(sequence(7), sequence(8))]  # rows are independent


def test_greedy_select_is_argmax():
    logits = random_logits("ties", 5)
    chained = SamplerChain((Temperature(0.7), TopK(5)))(logits, no_history(4))
    for final in (logits, chained):
        assert torch.equal(select(final, greedy=True, row_seeds=[1, 2, 3, 4], position=0), final.argmax(dim=-1))
