"""Beam search under a constraint: every hypothesis matches it, the best equals an exhaustive search over the
token paths the grammar allows (scored with plain forwards), forbidden expansions are never candidates, and the
tree says where the grammar overruled the model. References are llguidance's own matchers, fresh per path."""

from __future__ import annotations

import json
import re

import jsonschema
import llguidance
import numpy as np
import pytest

from decodelab.beam import BeamConfig, beam_search
from decodelab.constraints import Constraint, grammar_tokenizer
from decodelab.errors import BadInput

PROMPT = "Is the sky blue? Answer:"
OPTIONS = [" yes", " no", " maybe"]  # none a prefix of another: an option's end is the grammar's end
NAME = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}},
    "required": ["name"],
    "additionalProperties": False,
}
DATE = r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]"


def reference_matcher(bundled, constraint: Constraint, generated: list[int]):
    """A fresh llguidance matcher that has consumed `generated`."""
    tokenizer = grammar_tokenizer(bundled.tokenizer, bundled.stop_ids(), bundled.decoder.backend.vocab_size)
    matcher = llguidance.LLMatcher(tokenizer, constraint.grammar_text())
    assert matcher.consume_tokens(generated)
    return matcher


def allowed(bundled, matcher) -> np.ndarray:
    """(V,) bool: the tokens `matcher` allows next (llguidance's bitmask, least significant bit first)."""
    bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
    return bits[: bundled.decoder.backend.vocab_size].astype(bool)


def exhaustive(bundled, constraint: Constraint, prompt_ids: list[int]) -> tuple[dict[tuple[int, ...], float], int]:
    """Every token path the grammar allows, to its end, with log P(path | prompt) from plain forwards; and the
    most nodes any depth of that tree has (beams enough to keep every one)."""
    paths: dict[tuple[int, ...], float] = {}
    depths: dict[int, int] = {}

    def walk(path: list[int], total: float) -> None:
        depths[len(path)] = depths.get(len(path), 0) + 1
        matcher = reference_matcher(bundled, constraint, path)
        if path and matcher.is_stopped():
            paths[tuple(path)] = total
            return
        logprobs = bundled.next_token_distribution(prompt_ids + path).logits.log_softmax(dim=-1)  # (V,)
        for token in np.flatnonzero(allowed(bundled, matcher)).tolist():
            assert token not in bundled.stop_ids()  # no option is a prefix of another: ends come with is_stopped
            walk([*path, token], total + float(logprobs[token]))

    walk([], 0.0)
    return paths, max(depths.values())


def test_the_best_choice_equals_an_exhaustive_search_over_the_allowed_paths(bundled):
    constraint = Constraint.choice(OPTIONS)
    prompt_ids = bundled.prompt_ids(PROMPT)
    paths, widest = exhaustive(bundled, constraint, prompt_ids)
    assert len(paths) > len(OPTIONS) and widest <= 16  # several tokenizations of each option; a small search
    # length_penalty 0 ranks by log-probability alone; with a beam per node of the widest depth, nothing is pruned
    # but what provably cannot win, so the search is exact
    result = beam_search(
        bundled, prompt_ids, num_beams=widest, length_penalty=0.0, num_return_sequences=widest, choice=OPTIONS
    )
    best = max(paths, key=lambda path: paths[path])
    assert result.sequences[0].token_ids == list(best)
    assert result.sequences[0].sum_logprob == pytest.approx(paths[best], abs=1e-4)
    for hypothesis in result.sequences:
        assert hypothesis.finished_by.kind == "constraint_complete" and hypothesis.text in OPTIONS
        assert hypothesis.sum_logprob == pytest.approx(paths[tuple(hypothesis.token_ids)], abs=1e-4)
        assert bundled.stop_ids().isdisjoint(hypothesis.token_ids)  # the grammar ended it, not a stop token
    expected = sorted(paths.values(), reverse=True)[: len(result.sequences)]
    assert [h.sum_logprob for h in result.sequences] == pytest.approx(expected, abs=1e-4)
    # generate's greedy output under the same choice is one of these paths, with the same log-probability
    greedy = bundled.generate(PROMPT, choice=OPTIONS, greedy=True)
    assert greedy.logprob == pytest.approx(paths[tuple(greedy.token_ids)], abs=1e-4)


def check_tree(bundled, result, constraint: Constraint) -> None:
    """Every node is an allowed token after its parent's path; each step ranks min(K, allowed expansions); each
    live beam's report is the library's mask; the tree flags exactly the beams whose top choice was forbidden."""
    tree = result.tree
    ranked = max(2, 1 + len(bundled.stop_ids())) * result.config.num_beams
    for step in tree.steps:
        counts = []
        for beam, live in enumerate(step.live):
            mask = allowed(bundled, reference_matcher(bundled, constraint, list(live.token_ids)))
            (report,) = step.stages[beam]
            assert report.name == "constraint" and report.kept == int(mask.sum())
            forbidden_top = not mask[step.model_top[beam].id]
            assert report.removed_top == forbidden_top
            assert step.overruled(beam) == ("constraint" if forbidden_top else None)
            counts.append(report.kept)
            for node in (tree.nodes[i] for i in step.candidates if tree.nodes[i].parent_id == live.node_id):
                assert mask[node.token_id] and np.isfinite(node.cum_logprob)
        assert len(step.candidates) == min(ranked, sum(counts))
    flagged = tree.overruled()
    assert all(stage == "constraint" for stage, _ in flagged.values())
    render = tree.render(max_children=None)
    assert render.count("the constraint forbade it") == len(flagged)
    assert len(render.splitlines()) == len(tree.nodes)


@pytest.mark.parametrize(
    "prompt, keywords, matches",
    [
        ("Today's date is", {"regex": DATE}, lambda text: re.fullmatch(DATE, text)),
        (
            "The best French city is",
            {"choice": [" Paris", " Lyon", " the city of Marseille"]},
            lambda text: text in (" Paris", " Lyon", " the city of Marseille"),
        ),
        ("A person as JSON:", {"json_schema": NAME}, lambda text: jsonschema.validate(json.loads(text), NAME) is None),
    ],
)
def test_every_hypothesis_matches_and_the_tree_is_honest(bundled, prompt, keywords, matches):
    result = bundled.beam_search(prompt, num_beams=3, num_return_sequences=3, max_new_tokens=40, **keywords)
    assert len(result.sequences) == 3
    for hypothesis in result.sequences:
        assert hypothesis.finished_by.kind == "constraint_complete", hypothesis.text
        assert matches(hypothesis.text), hypothesis.text
    constraint = result.config.constraint
    assert constraint is not None and constraint.kind == next(iter(keywords))
    check_tree(bundled, result, constraint)
    assert json.loads(json.dumps(result.to_dict()))["config"]["constraint"] == constraint.to_dict()


def test_a_candidate_that_completes_the_grammar_below_the_top_beams_is_pruned_and_says_why(bundled):
    result = bundled.beam_search(PROMPT, num_beams=2, choice=OPTIONS, max_new_tokens=8)
    notes = {node.note for node in result.tree.nodes if node.status == "pruned"}
    assert "completes the constraint, ranked below the top 2" in notes
    finished = [node for node in result.tree.nodes if node.status == "finished"]
    assert finished and all(node.note == "constraint complete" for node in finished)


def test_an_unconstrained_search_records_the_models_top_choice_and_no_reports(bundled):
    result = bundled.beam_search("The capital of France is", num_beams=2, max_new_tokens=2)
    first = result.tree.steps[0]
    assert first.stages == ((),) and first.overruled(0) is None and result.tree.overruled() == {}
    assert first.model_top[0].id == bundled.next_token_distribution("The capital of France is").top(1)[0].id


def test_no_allowed_continuation_and_two_constraints_are_one_clear_error(bundled):
    digits = tuple(bundled.tokenizer.encode(str(d), add_special_tokens=False)[0] for d in range(10))
    with pytest.raises(BadInput, match="no allowed continuation at step 0"):
        bundled.beam_search("Pick a digit:", num_beams=2, regex="[0-9]", ban=digits)
    with pytest.raises(BadInput, match="one constraint at a time"):
        beam_search(bundled, [1, 2], num_beams=2, constraint=Constraint.regex("a"), choice=["b"])
    with pytest.raises(BadInput, match="constraint must be a decodelab.constraints.Constraint"):
        BeamConfig(num_beams=2, constraint="[0-9]+")  # type: ignore[arg-type]


def test_where_the_grammar_may_end_or_go_on_a_hypothesis_ends_with_a_stop_token_or_completes_it(bundled):
    # After one digit the output may end (a stop token is allowed) or take up to two more (then it is complete).
    question = "How many legs does a spider have? Reply with the number only."
    result = bundled.beam_search(question, chat=True, num_beams=4, num_return_sequences=4, regex=r"[0-9]{1,3}")
    kinds = set()
    for hypothesis in result.sequences:
        kinds.add(hypothesis.finished_by.kind)
        assert re.fullmatch(r"[0-9]{1,3}", hypothesis.text), hypothesis.text
        if hypothesis.finished_by.kind == "stop_token":
            assert hypothesis.token_ids[-1] in bundled.stop_ids()
        else:
            assert hypothesis.finished_by.kind == "constraint_complete" and len(hypothesis.text) == 3
    assert kinds == {"stop_token", "constraint_complete"}, [(h.text, str(h.finished_by)) for h in result.sequences]
