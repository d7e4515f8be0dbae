"""Constrained decoding (`decodelab.constraints`): every sample matches its constraint, the stage's mask is
llguidance's own, and the matchers follow undo, fork, replay and several rows exactly."""

from __future__ import annotations

import json
import re

import jsonschema
import llguidance
import llguidance.torch
import pytest
import torch

from decodelab.constraints import Constraint, ConstraintStage, grammar_tokenizer
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "height": {"type": "number", "minimum": 0, "maximum": 3},
        "mood": {"enum": ["happy", "sad", "calm"]},
        "pets": {
            "type": "array",
            "maxItems": 2,
            "items": {
                "type": "object",
                "properties": {
                    "kind": {"enum": ["cat", "dog"]},
                    "legs": {"type": "integer", "minimum": 0, "maximum": 4},
                },
                "required": ["kind", "legs"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "age", "height", "mood", "pets"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_200_seeded_samples_under_a_nested_schema_all_validate(tiny_llama_dir):
    # A random model at temperature 1 wanders wherever the grammar lets it: a harder test of the mask than a
    # trained one (which writes the likely JSON), and fast enough for 200 rows.
    import decodelab

    tiny = decodelab.load(str(tiny_llama_dir))
    samples = tiny.sample("A person:", 200, json_schema=PERSON, temperature=1.0, seed=0, max_new_tokens=300)
    for sample in samples:
        assert sample.stop_reason.kind == "constraint_complete", sample.text
        jsonschema.validate(json.loads(sample.text), PERSON)
    assert len({sample.text for sample in samples}) > 150  # sampled, not one forced answer


def test_a_trained_model_writes_valid_json_under_the_schema(bundled):
    samples = bundled.sample("Describe a person as JSON:", 8, json_schema=PERSON, temperature=1.0, seed=0)
    for sample in samples:
        assert sample.stop_reason.kind == "constraint_complete", sample.text
        jsonschema.validate(json.loads(sample.text), PERSON)


def test_regex_and_choice_samples_all_match(bundled):
    dates = bundled.sample("Today's date is", 24, regex=r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]", temperature=1.0, seed=1)
    assert all(re.fullmatch(r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]", d.text) for d in dates)
    options = [" Paris", " Lyon", " the city of Marseille"]
    picks = bundled.sample("The best French city is", 24, choice=options, temperature=1.5, seed=2)
    assert all(p.text in options for p in picks) and len({p.text for p in picks}) > 1
    assert all(p.stop_reason.kind == "constraint_complete" for p in picks)


def test_a_lark_grammar_and_a_gbnf_grammar_constrain_alike(bundled):
    lark = 'start: num " + " num " = " num\nnum: /[0-9]{1,2}/'
    gbnf = 'root ::= num " + " num " = " num\nnum ::= [0-9] [0-9]?'
    for grammar in (lark, gbnf):
        for result in bundled.sample("Arithmetic:", 6, grammar=grammar, temperature=1.0, seed=3, max_new_tokens=20):
            assert re.fullmatch(r"[0-9]{1,2} \+ [0-9]{1,2} = [0-9]{1,2}", result.text), result.text


def library_mask(bundled, constraint: Constraint, generated: list[int]) -> torch.Tensor:
    """llguidance's own allowed set after `generated`, from a fresh matcher: the reference."""
    tokenizer = grammar_tokenizer(bundled.tokenizer, bundled.stop_ids(), bundled.decoder.backend.vocab_size)
    matcher = llguidance.LLMatcher(tokenizer, constraint.grammar_text())
    assert matcher.consume_tokens(generated)
    bitmask = llguidance.torch.allocate_token_bitmask(1, tokenizer.vocab_size)
    llguidance.torch.fill_next_token_bitmask(matcher, bitmask, 0)
    logits = torch.zeros(1, tokenizer.vocab_size)
    llguidance.torch.apply_token_bitmask_inplace(logits, bitmask)
    return torch.isfinite(logits[0])


def test_the_stage_report_counts_the_librarys_mask_and_the_mass_it_removed(bundled):
    constraint = Constraint.json_schema(PERSON)
    result = bundled.generate("Describe a person as JSON:", json_schema=PERSON, greedy=True, max_new_tokens=60)
    generated = result.token_ids
    for index, step in enumerate(result.steps):
        mask = library_mask(bundled, constraint, generated[:index])
        report = step.stages[0]
        assert report.name == "constraint" and report.kept == int(mask.sum())
        assert 0 <= report.removed_mass <= 1 and mask.shape[0] == bundled.decoder.backend.vocab_size
        top_forbidden = not bool(mask[step.raw_top[0].id])  # the model's own top choice was outside the grammar
        assert report.removed_top == top_forbidden
        assert step.overruled_by == ("constraint" if top_forbidden else None)
        if top_forbidden:
            assert report.removed_mass >= step.raw_top[0].prob - 1e-6  # its mass went with it
        assert bool(mask[step.token_id])
    assert any(step.overruled_by for step in result.steps)  # the schema overruled the model somewhere


def test_a_session_follows_undo_fork_and_replay_exactly(bundled):
    from decodelab.session import Session

    constraint = Constraint.json_schema(PERSON)
    config = GenerationConfig(constraint=constraint, temperature=1.0, seed=4, max_new_tokens=80)
    session = Session(bundled, bundled.prompt_ids("A person as JSON:"), config)
    for _ in range(8):
        session.step()
    session.undo(3)
    twin = session.fork()
    for _ in range(4):
        twin.step()
    stage = twin._chain.stages[0]
    assert isinstance(stage, ConstraintStage)
    for branch in (session, twin):  # the shared matchers rolled back and forward: each branch's mask is exact
        ours = stage.allowed(branch._history(None))[0]
        assert torch.equal(ours, library_mask(bundled, constraint, branch.token_ids))
    saved = json.loads(json.dumps(twin.save()))  # the constraint travels in the saved config
    assert Session.replay(bundled, saved).token_ids == twin.token_ids


def test_forcing_a_forbidden_token_is_one_clear_error(bundled):
    from decodelab.session import Session

    session = Session(bundled, bundled.prompt_ids("Answer:"), GenerationConfig(constraint=Constraint.regex("[0-9]+")))
    with pytest.raises(BadInput, match="forbidden here by the regex constraint"):
        session.append(" yes")
    session.append("7")
    assert session.token_ids == bundled.tokenizer.encode("7", add_special_tokens=False)


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"json_schema": "{not json"}, "the JSON schema is not JSON"),
        ({"json_schema": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}, "does not compile"),
        ({"regex": "(unclosed"}, "regex constraint does not compile"),
        ({"choice": []}, "choice constraint needs a list"),
        ({"grammar": "start: undefined_rule"}, "grammar constraint does not compile"),
        ({"regex": "a", "choice": ["b"]}, "one constraint at a time"),
    ],
)
def test_bad_constraints_are_one_clear_error(bundled, keywords, message):
    with pytest.raises(BadInput, match=message):
        bundled.generate("Hi", max_new_tokens=2, **keywords)
