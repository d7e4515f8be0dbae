"""compare: strategies parsed strictly, run from one prompt and seed, measured by the tested functions."""

import math

import pytest

import decodelab
from decodelab.compare import Strategy, compare, comparison_table, parse_strategies
from decodelab.metrics import distinct_n, repeated_ngram_rate
from decodelab.scoring import score_ids

STORY = "Write a long story about a dragon who lives in a castle. Once upon a time, there was a dragon who"


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("greedy", [Strategy("greedy", "greedy", {"greedy": True})]),
        ("beam:5", [Strategy("beam:5", "beam", {"num_beams": 5})]),
        (
            " top_k:50 ; top_p:0.9 ",
            [Strategy("top_k:50", "sample", {"top_k": 50}), Strategy("top_p:0.9", "sample", {"top_p": 0.9})],
        ),
        (
            "temperature:0.8,top_p:0.9",
            [Strategy("temperature:0.8,top_p:0.9", "sample", {"temperature": 0.8, "top_p": 0.9})],
        ),
        (
            "min_p:0.05; no_repeat_ngram:3",
            [
                Strategy("min_p:0.05", "sample", {"min_p": 0.05}),
                Strategy("no_repeat_ngram:3", "sample", {"no_repeat_ngram_size": 3}),
            ],
        ),
    ],
)
def test_parse_strategies(spec, expected):
    assert parse_strategies(spec) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "no strategies"),
        ("nucleus:0.9", "unknown strategy setting 'nucleus'"),
        ("top_k:many", "top_k needs a int value"),
        ("beam:", "beam needs a int value"),
    ],
)
def test_bad_strategies(spec, message):
    with pytest.raises(decodelab.DecodelabError, match=message):
        parse_strategies(spec)


@pytest.mark.slow
def test_outcomes_are_the_engines_outputs_measured_by_the_metric_functions(bundled):
    ids = bundled.prompt_ids("The best way to learn a language is")
    outcomes = compare(bundled, ids, parse_strategies("greedy; beam:3; top_p:0.9"), seed=3, max_new_tokens=16)
    greedy, beam, nucleus = outcomes
    assert greedy.token_ids == bundled.generate(ids, greedy=True, max_new_tokens=16).token_ids
    assert nucleus.token_ids == bundled.generate(ids, top_p=0.9, seed=3, max_new_tokens=16).token_ids
    from decodelab.beam import beam_search

    assert beam.token_ids == beam_search(bundled, ids, num_beams=3, max_new_tokens=16).sequences[0].token_ids
    for outcome in outcomes:
        score = score_ids(bundled, ids + outcome.token_ids, len(ids))
        assert outcome.logprob == pytest.approx(score.total_logprob, rel=1e-6)
        assert outcome.perplexity == pytest.approx(math.exp(-score.total_logprob / len(outcome.token_ids)), rel=1e-5)
        content = [i for i in outcome.token_ids if i not in bundled.stop_ids()]
        assert outcome.distinct_2 == distinct_n(content, 2)
        assert outcome.repeated_3gram_rate == repeated_ngram_rate(content, 3)
    assert greedy.logprob >= nucleus.logprob  # greedy takes the likeliest token at every step
    table = comparison_table(outcomes)
    assert table.splitlines()[0].split() == ["greedy", "beam:3", "top_p:0.9"]
    assert "--- beam:3" in table and beam.text.strip() in table


@pytest.mark.slow
def test_greedy_and_beam_repeat_themselves_sampling_does_not(bundled):
    """The tutorials' point, in numbers, on a long story from the bundled model."""
    ids = bundled.prompt_ids(STORY, chat=True)
    greedy, beam, sampled = compare(
        bundled, ids, parse_strategies("greedy; beam:4; temperature:1.0,top_p:0.95"), seed=0, max_new_tokens=96
    )
    assert sampled.distinct_2 > max(greedy.distinct_2, beam.distinct_2)
    assert sampled.repeated_3gram_rate < min(greedy.repeated_3gram_rate, beam.repeated_3gram_rate)
    assert sampled.perplexity > max(greedy.perplexity, beam.perplexity)  # less predictable text


def test_every_strategy_runs_under_the_constraint_and_the_table_says_so(bundled):
    from decodelab.constraints import Constraint

    options = [" Paris", " Lyon", " the city of Marseille"]
    constraint = Constraint.choice(options)
    ids = bundled.prompt_ids("The best French city is")
    outcomes = compare(bundled, ids, parse_strategies("greedy; beam:2; top_p:0.9"), seed=1, constraint=constraint)
    assert outcomes.constraint == constraint
    for outcome in outcomes:
        assert outcome.text in options and outcome.stop_reason == "constraint complete"
    greedy = bundled.generate(ids, greedy=True, choice=options)
    assert outcomes[0].token_ids == greedy.token_ids
    table = outcomes.table()
    assert table.splitlines()[0] == f"every strategy under the constraint {constraint.describe()}"
    assert comparison_table(outcomes).splitlines()[0].split() == [
        "greedy",
        "beam:2",
        "top_p:0.9",
    ]  # no constraint given
