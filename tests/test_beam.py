"""Beam search: equal to transformers' generate(num_beams=...), its tree consistent, its parameters checked.

Parity compares, for each returned sequence, the generated ids (ours include the stop token that finished a
hypothesis; transformers' sequences hold it too, then padding, so each is cut at its length read from
`beam_indices`), the score (transformers' `sequences_scores`), and the number of steps the search ran
(`len(scores)`), which pins the early-stopping heuristics down even where they do not change the output.
"""

import itertools
import json
import math

import pytest
import torch

import decodelab
from decodelab.beam import BeamConfig, beam_search
from decodelab.decoding import reorder_cache
from decodelab.errors import BadInput, DecodelabError

CHAT_PROMPT = "What is the capital of France?"
GRID = list(itertools.product((2, 4), (0.6, 1.0, 1.8), (True, False, "never")))
# A Latin square over (num_beams, length_penalty, early_stopping): each value at least twice, every pair once.
QUICK = {(2, 0.6, True), (2, 1.0, "never"), (2, 1.8, False), (4, 0.6, False), (4, 1.0, True), (4, 1.8, "never")}


def hf_beam_search(model, ids: list[int], stop_ids, **options) -> tuple[list[list[int]], list[float], int]:
    """transformers' beam search: generated ids per returned sequence, their scores, and the steps it ran."""
    stops = sorted(stop_ids)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            eos_token_id=stops,
            pad_token_id=stops[0],
            output_scores=True,
            output_logits=True,
            return_dict_in_generate=True,
            **options,
        )
    lengths = (out.beam_indices >= 0).sum(dim=1).tolist()  # beam_indices is -1 past each sequence's end
    sequences = [out.sequences[row, len(ids) : len(ids) + n].tolist() for row, n in enumerate(lengths)]
    return sequences, out.sequences_scores.tolist(), len(out.scores)


def assert_same_as_transformers(lm, model, ids, stop_ids=None, atol=1e-4, **options):
    stop_ids = lm.stop_ids() if stop_ids is None else stop_ids
    ours = beam_search(lm, ids, stop_token_ids=stop_ids, **options)
    expected, expected_scores, expected_steps = hf_beam_search(model, ids, stop_ids, **options)
    assert [h.token_ids for h in ours.sequences] == expected
    assert [h.score for h in ours.sequences] == pytest.approx(expected_scores, abs=atol)
    assert len(ours.tree.steps) == expected_steps
    return ours


@pytest.fixture(scope="module")
def gpt2(tiny_gpt2_dir):
    """Our loop on the transformers backend, and the same random GPT-2 as the reference."""
    from transformers import AutoModelForCausalLM

    return decodelab.load(tiny_gpt2_dir), AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()


@pytest.fixture(scope="module")
def gpt2_stops(gpt2):
    """Two tokens the random GPT-2 ranks 3rd and 7th after 'Hello world': they finish some hypotheses early."""
    top = gpt2[0].next_token_distribution("Hello world").top(7)
    return {top[2].id, top[6].id}


@pytest.mark.parametrize(
    "num_beams, length_penalty, early_stopping",
    [case if case in QUICK else pytest.param(*case, marks=pytest.mark.slow) for case in GRID],
)
def test_chat_beam_search_equals_transformers_on_the_bundled_model(
    bundled, bundled_hf, num_beams, length_penalty, early_stopping
):
    ours = assert_same_as_transformers(
        bundled,
        bundled_hf,
        bundled.prompt_ids(CHAT_PROMPT, chat=True),
        num_beams=num_beams,
        max_new_tokens=16,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=num_beams,
    )
    assert any(h.finished_by.kind == "stop_token" for h in ours.sequences)


def test_plain_prompt_with_punctuation_as_stop_tokens_equals_transformers(bundled, bundled_hf):
    stops = {bundled.tokenizer.encode(mark, add_special_tokens=False)[0] for mark in (".", ",")}
    ours = assert_same_as_transformers(
        bundled,
        bundled_hf,
        bundled.prompt_ids("The cat sat on the"),
        stop_ids=stops,
        num_beams=3,
        max_new_tokens=14,
        length_penalty=1.0,
        early_stopping=False,
        num_return_sequences=2,
    )
    assert {h.finished_by.kind for h in ours.sequences} == {"stop_token"}


@pytest.mark.parametrize("num_beams, length_penalty, early_stopping", GRID)
def test_beam_search_equals_transformers_on_a_tiny_random_gpt2(
    gpt2, gpt2_stops, num_beams, length_penalty, early_stopping
):
    lm, reference = gpt2
    assert_same_as_transformers(
        lm,
        reference,
        lm.prompt_ids("Hello world"),
        stop_ids=gpt2_stops,
        atol=1e-5,
        num_beams=num_beams,
        max_new_tokens=16,
        length_penalty=length_penalty,
        early_stopping=early_stopping,
        num_return_sequences=num_beams,
    )


@pytest.mark.parametrize("num_return_sequences", [1, 2])
def test_eos_only_and_fewer_returned_sequences_on_gpt2(gpt2, num_return_sequences):
    lm, reference = gpt2
    ours = assert_same_as_transformers(
        lm,
        reference,
        lm.prompt_ids("Transformers are the"),
        atol=1e-5,
        num_beams=3,
        max_new_tokens=12,
        num_return_sequences=num_return_sequences,
    )
    assert len(ours.sequences) == num_return_sequences
    assert all(h.finished_by.kind == "max_new_tokens" and len(h.token_ids) == 12 for h in ours.sequences)


def test_repetition_penalty_and_no_repeat_ngram_equal_transformers(bundled, bundled_hf, gpt2):
    options = dict(
        num_beams=3, max_new_tokens=16, num_return_sequences=3, repetition_penalty=1.3, no_repeat_ngram_size=3
    )
    prompt = "The cat sat on the mat. The cat sat on the"
    ours = assert_same_as_transformers(bundled, bundled_hf, bundled.prompt_ids(prompt), **options)
    prompt_length = len(bundled.prompt_ids(prompt))
    for hypothesis in ours.sequences:  # no generated token completes a trigram seen before it
        ids = bundled.prompt_ids(prompt) + hypothesis.token_ids
        for end in range(prompt_length, len(ids)):
            assert ids[end - 2 : end + 1] not in [ids[i : i + 3] for i in range(end - 2)]
    lm, reference = gpt2
    assert_same_as_transformers(
        lm,
        reference,
        lm.prompt_ids("Hello world"),
        atol=1e-5,
        **{**options, "no_repeat_ngram_size": 2, "repetition_penalty": 3.0},
    )


@pytest.fixture(scope="module")
def chat_result(bundled):
    return beam_search(
        bundled,
        bundled.prompt_ids(CHAT_PROMPT, chat=True),
        num_beams=3,
        max_new_tokens=16,
        length_penalty=1.3,
        num_return_sequences=3,
    )


def test_each_returned_sequence_is_a_path_of_kept_nodes_ending_in_a_finished_one(chat_result):
    tree = chat_result.tree
    assert tree.returned == [h.node_id for h in chat_result.sequences]
    for hypothesis in chat_result.sequences:
        path = tree.path(hypothesis.node_id)
        assert [node.token_id for node in path] == hypothesis.token_ids
        assert [node.step for node in path] == list(range(len(path)))
        assert [node.status for node in path] == ["kept"] * (len(path) - 1) + ["finished"]
        assert tree.nodes[path[0].parent_id].status == "root"
        # The beam score is the running sum of the token log-probabilities along the path ...
        assert path[-1].cum_logprob == pytest.approx(sum(node.logprob for node in path), abs=1e-4)
        assert hypothesis.sum_logprob == path[-1].cum_logprob
        # ... and the returned score divides it by the generated length (stop token included) ** penalty.
        assert hypothesis.score == pytest.approx(hypothesis.sum_logprob / len(hypothesis.token_ids) ** 1.3, rel=1e-6)
        assert path[-1].score == hypothesis.score
    best = chat_result.sequences[0]
    assert best.finished_by.kind == "stop_token" and best.finished_by.token_id == best.token_ids[-1]
    assert "Paris" in best.text and "<|im_end|>" not in best.text
    assert [h.score for h in chat_result.sequences] == sorted((h.score for h in chat_result.sequences), reverse=True)


def test_each_step_ranks_k_candidates_keeps_num_beams_and_expands_what_it_kept(bundled, chat_result):
    tree, width = chat_result.tree, 3
    ranked = max(2, 1 + len(bundled.stop_ids())) * width
    assert [beam.node_id for beam in tree.steps[0].live] == [0]  # step 0 expands the prompt alone
    for step, following in zip(tree.steps, [*tree.steps[1:], None]):
        candidates = [tree.nodes[i] for i in step.candidates]
        assert len(candidates) == ranked
        assert [node.rank for node in candidates] == list(range(ranked))
        assert [node.cum_logprob for node in candidates] == sorted((n.cum_logprob for n in candidates), reverse=True)
        assert {node.parent_id for node in candidates} <= {beam.node_id for beam in step.live}
        kept = [node.id for node in candidates if node.status == "kept"]
        if following is not None:
            assert len(kept) == width and [beam.node_id for beam in following.live] == kept
        # Only the top num_beams candidates can finish a hypothesis.
        assert all(node.rank < width for node in candidates if node.status == "finished")
        assert {h.node_id for h in step.finished} == {node.id for node in candidates if node.status == "finished"}
        for node in candidates:
            parent = tree.nodes[node.parent_id]
            assert node.cum_logprob == pytest.approx(parent.cum_logprob + node.logprob, abs=1e-4)


def test_the_tree_renders_and_everything_is_json_ready(chat_result):
    text = chat_result.tree.render(max_children=2)
    assert text.startswith("(prompt)") and "★1" in text and "★3" in text and "more" in text
    assert "Paris" in text and "finished" in text and "pruned" in text
    assert len(chat_result.tree.render(max_children=None).splitlines()) == len(chat_result.tree.nodes)
    data = json.loads(json.dumps(chat_result.to_dict()))
    assert data["sequences"][0]["token_ids"] == chat_result.sequences[0].token_ids
    assert data["config"]["num_beams"] == 3 and len(data["tree"]["nodes"]) == len(chat_result.tree.nodes)
    assert data["tree"]["steps"][0]["live"] == [{"node_id": 0, "token_ids": [], "cum_logprob": 0.0}]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(num_beams=1), "num_beams must be a whole number >= 2 (1 beam is greedy decoding"),
        (dict(num_beams=0), "num_beams must be a whole number >= 2"),
        (dict(num_beams=2.5), "got 2.5"),
        (dict(num_beams=True), "got True"),
        (dict(max_new_tokens=0), "max_new_tokens must be a whole number >= 1, got 0"),
        (dict(num_return_sequences=5), "num_return_sequences must be <= num_beams (4), got 5"),
        (dict(num_return_sequences=0), "num_return_sequences must be a whole number >= 1, got 0"),
        (dict(early_stopping="always"), "early_stopping must be True, False or 'never', got 'always'"),
        (dict(early_stopping=1), "early_stopping must be True, False or 'never', got 1"),
        (dict(early_stopping=None), "got None"),
        (dict(length_penalty=math.nan), "length_penalty must be a finite number, got nan"),
        (dict(length_penalty=math.inf), "got inf"),
        (dict(length_penalty="1"), "got '1'"),
        (
            dict(penalties={"no_repeat_ngram_size": -1}),
            "no_repeat_ngram_size must be a whole number >= 1 (0 turns it off), got -1",
        ),
        (dict(penalties={"repetition_penalty": 0.0}), "repetition_penalty must be in [0.0001, 10000], got 0.0"),
        (dict(penalties={"top_p": 0.9}), "beam search takes the settings of stages greedy decoding keeps"),
        (dict(stop_token_ids=(-1,)), "stop_token_ids must be token ids >= 0, got [-1]"),
    ],
)
def test_bad_parameters_are_one_clear_error(options, message):
    with pytest.raises(BadInput) as error:
        BeamConfig(**{"num_beams": 4, **options})
    assert message in str(error.value)


def test_bad_prompts_are_one_clear_error(gpt2):
    lm = gpt2[0]
    with pytest.raises(BadInput, match="non-empty list of token ids"):
        beam_search(lm, [], num_beams=2)
    with pytest.raises(BadInput, match="leaving no room to generate"):
        beam_search(lm, [1] * lm.context_length, num_beams=2)


def test_a_cache_that_cannot_reorder_is_refused():
    with pytest.raises(DecodelabError, match="object cannot reorder its rows"):
        reorder_cache(object(), torch.tensor([0, 0]))


def test_context_limit_ends_hypotheses_as_context_full(gpt2):
    lm = gpt2[0]
    result = beam_search(lm, [464] * (lm.context_length - 3), num_beams=2, max_new_tokens=10, stop_token_ids=())
    assert [len(h.token_ids) for h in result.sequences] == [3]
    assert result.sequences[0].finished_by.kind == "context_full" and result.tree.stop_reason == "context_full"


def run_cli(monkeypatch, capsys, lm, *argv) -> str:
    from decodelab.cli import OneLineErrorParser
    from decodelab.cli import beam as beam_command

    monkeypatch.setattr(beam_command, "load_model", lambda args: lm)
    parser = OneLineErrorParser(prog="decodelab")
    beam_command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["beam", *argv])
    assert args.run(args) == 0
    return capsys.readouterr().out


def test_cli_prints_sequences_then_tree_or_one_json_object(monkeypatch, capsys, bundled):
    out = run_cli(
        monkeypatch,
        capsys,
        bundled,
        CHAT_PROMPT,
        "--chat",
        "--beams",
        "2",
        "--max-new-tokens",
        "10",
        "--num-return-sequences",
        "2",
        "--early-stopping",
        "true",
        "--tree",
    )
    assert out.startswith("--- #1  score ") and "--- #2" in out and "Paris" in out and "stop token 2" in out
    assert "(prompt)  search ended: " in out and "★2" in out
    out = run_cli(
        monkeypatch,
        capsys,
        bundled,
        "The cat sat on the",
        "--beams",
        "2",
        "--max-new-tokens",
        "3",
        "--length-penalty",
        "0.5",
        "--json",
    )
    data = json.loads(out)
    assert data["model"] == bundled.name and data["config"]["length_penalty"] == 0.5
    assert len(data["sequences"]) == 1 and len(data["sequences"][0]["token_ids"]) == 3


def test_cli_rejects_an_unknown_early_stopping_mode(monkeypatch, capsys, bundled):
    with pytest.raises(SystemExit):
        run_cli(monkeypatch, capsys, bundled, "Hi", "--early-stopping", "sometimes")
    assert "invalid choice: 'sometimes'" in capsys.readouterr().err
