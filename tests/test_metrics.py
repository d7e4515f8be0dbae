"""Compare metrics on hand-made examples: distinct-n, repeated n-grams, mean entropy, nucleus size."""

import math

import pytest
import torch

from decodelab.errors import BadInput
from decodelab.metrics import (
    distinct_n,
    mean_entropy,
    mean_nucleus_size,
    nucleus_size,
    nucleus_sizes,
    repeated_ngram_rate,
)
from decodelab.records import Step

WORDS = "the cat the cat the".split()


@pytest.mark.parametrize(
    "items, n, expected",
    [
        (WORDS, 1, 2 / 5),  # {the, cat} of 5
        (WORDS, 2, 2 / 4),  # {the cat, cat the} of 4
        (WORDS, 3, 2 / 3),  # {the cat the, cat the cat} of 3
        (WORDS, 5, 1.0),  # the one 5-gram
        (WORDS, 6, 0.0),  # no 6-gram in 5 words
        ([], 1, 0.0),
        ([7, 8, 9], 1, 1.0),  # token ids work the same
        ([7, 7, 7, 7], 2, 1 / 3),
    ],
)
def test_distinct_n(items, n, expected):
    assert distinct_n(items, n) == pytest.approx(expected)


@pytest.mark.parametrize(
    "items, n, expected",
    [
        (list("abcabca"), 3, 2 / 5),  # abc bca cab abc bca: the last two were seen before
        (list("abcabca"), 1, 4 / 7),  # a b c new, then a b c a repeat
        (list("abcd"), 2, 0.0),
        ([1, 1, 1, 1], 2, 2 / 3),
        (list("abc"), 4, 0.0),  # n larger than the sequence
        ([], 3, 0.0),
    ],
)
def test_repeated_ngram_rate(items, n, expected):
    assert repeated_ngram_rate(items, n) == pytest.approx(expected)


def test_repeated_ngram_rate_defaults_to_trigrams():
    assert repeated_ngram_rate(list("abcabca")) == pytest.approx(0.4)


@pytest.mark.parametrize("function", [distinct_n, repeated_ngram_rate])
def test_ngram_measures_reject_bad_n_and_plain_strings(function):
    for n in (0, -1, 1.5, True):
        with pytest.raises(BadInput, match=f"n must be a whole number >= 1, got {n!r}"):
            function(WORDS, n)
    with pytest.raises(BadInput, match="not a string"):
        function("the cat the", 1)


@pytest.mark.parametrize("p, expected", [(0.9, 3), (0.8, 2), (0.5, 1), (0.95, 3), (0.96, 4), (1.0, 4), (0.01, 1)])
def test_nucleus_size_on_a_four_token_distribution(p, expected):
    assert nucleus_size([0.5, 0.3, 0.15, 0.05], p) == expected
    assert nucleus_size(torch.tensor([0.15, 0.05, 0.5, 0.3]), p) == expected  # order does not matter


def test_nucleus_sizes_per_row_and_agrees_with_top_p():
    from decodelab.samplers import TopP

    torch.manual_seed(0)
    logits = torch.randn(6, 50) * 3  # (B, V)
    probs = logits.softmax(dim=-1)
    for p in (0.3, 0.7, 0.9):
        kept = (TopP(p)(logits, None) > float("-inf")).sum(dim=-1)  # (B,) tokens the nucleus sampler keeps
        assert nucleus_sizes(probs, p).tolist() == kept.tolist()
        assert [nucleus_size(row, p) for row in probs] == kept.tolist()


def test_nucleus_size_edge_cases():
    assert nucleus_size([1.0], 0.9) == 1
    assert nucleus_size([0.25] * 4, 1.0) == 4
    assert nucleus_size([0.2, 0.2, 0.2], 1.0) == 3  # mass never reaches p: capped at V
    with pytest.raises(BadInput, match=r"p must be in \(0, 1\], got 1.5"):
        nucleus_size([0.5, 0.5], 1.5)
    with pytest.raises(BadInput, match=r"p must be in \(0, 1\], got 0"):
        nucleus_size([0.5, 0.5], 0)
    with pytest.raises(BadInput, match="at least one token"):
        nucleus_size([], 0.9)
    with pytest.raises(BadInput, match=r"one distribution \(V,\), got shape \(2, 2\)"):
        nucleus_size([[0.5, 0.5], [0.5, 0.5]], 0.9)


def make_step(entropy: float) -> Step:
    return Step(index=0, token_id=1, piece="a", prob=0.5, raw_prob=0.5, logprob=math.log(0.5), rank=1, entropy=entropy)


def test_mean_entropy_of_steps():
    assert mean_entropy([make_step(1.0), make_step(2.0), make_step(4.5)]) == pytest.approx(2.5)
    assert math.isnan(mean_entropy([]))
    with pytest.raises(BadInput, match="record 1 has no entropy.*trace=True"):
        mean_entropy([make_step(1.0), make_step(float("nan"))])


def test_mean_nucleus_size_of_scored_tokens():
    from decodelab.scoring import Score, ScoredToken

    tokens = [
        ScoredToken(
            id=1,
            piece="a",
            logprob=-1.0,
            prob=math.exp(-1.0),
            rank=1,
            surprisal_bits=1 / math.log(2),
            entropy=entropy,
            nucleus_size=size,
            position=position,
            context=position,
        )
        for position, (entropy, size) in enumerate([(1.0, 3), (2.0, 10)], start=1)
    ]
    assert mean_nucleus_size(tokens) == pytest.approx(6.5)
    score = Score([0, 1, 1], 1, tokens, 0.9, 128, 64, 1)
    assert mean_nucleus_size(score) == pytest.approx(6.5)  # a Score stands for its tokens
    assert mean_entropy(score) == pytest.approx(1.5)
    assert math.isnan(mean_nucleus_size([]))
