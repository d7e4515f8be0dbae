"""Scoring: per-token logprobs equal transformers' forward, equal the engine's Step logprobs, and long texts
are scored exactly once per token with sliding windows."""

import argparse
import dataclasses
import io
import json
import math

import pytest
import tokenizers
import torch

import decodelab
from decodelab.errors import BadInput
from decodelab.metrics import nucleus_size
from decodelab.scoring import plan_windows, score_ids, score_text
from decodelab.tokenizer import Tokenizer

PROMPT = "The capital of France is"
CONTINUATION = " Paris. It is known for the Eiffel Tower and its museums."


def reference_logprobs(model, ids: list[int]) -> torch.Tensor:
    """log P(ids[i + 1] | ids[: i + 1]) for every i, from one plain transformers forward: (T - 1, V)."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()  # (T, V)
    return logits[:-1].log_softmax(dim=-1)


def test_scores_equal_a_transformers_forward(bundled, bundled_hf):
    score = score_text(bundled, CONTINUATION, prompt=PROMPT)
    prompt_ids = bundled.tokenizer.encode(PROMPT)
    assert score.ids == prompt_ids + bundled.tokenizer.encode(CONTINUATION, add_special_tokens=False)
    assert score.prompt_length == len(prompt_ids) and score.forwards == 1
    reference = reference_logprobs(bundled_hf, score.ids)[len(prompt_ids) - 1 :]  # rows predicting the continuation
    targets = torch.tensor(score.ids[len(prompt_ids) :])
    expected = reference.gather(1, targets[:, None])[:, 0]
    assert [t.id for t in score.tokens] == targets.tolist()
    assert [t.position for t in score.tokens] == list(range(len(prompt_ids), len(score.ids)))
    assert torch.allclose(torch.tensor([t.logprob for t in score.tokens]), expected, atol=1e-4)
    for token, row, logprob in zip(score.tokens, reference, expected):
        assert token.rank == int((row > logprob).sum()) + 1
        assert token.prob == pytest.approx(math.exp(token.logprob))
        assert token.surprisal_bits == pytest.approx(-math.log2(token.prob))
        assert token.entropy == pytest.approx(float(-(row.exp() * row).sum()), abs=1e-3)
        assert abs(token.nucleus_size - nucleus_size(row.exp(), 0.9)) <= 1  # a boundary token may flip on rounding
        assert token.context == token.position
    assert score.total_logprob == pytest.approx(sum(t.logprob for t in score.tokens))
    assert score.total_logprob == pytest.approx(float(expected.sum()), abs=1e-3)
    assert score.perplexity == pytest.approx(math.exp(-float(expected.mean())), rel=1e-4)
    assert any(t.rank > 1 for t in score.tokens) and any(t.rank == 1 for t in score.tokens)


def test_top_n_lists_the_most_likely_tokens_as_transformers_ranks_them(bundled, bundled_hf):
    score = score_text(bundled, CONTINUATION, prompt=PROMPT, top_n=5)
    reference = reference_logprobs(bundled_hf, score.ids)[score.prompt_length - 1 :]
    for token, row in zip(score.tokens, reference):
        expected = row.topk(5)
        assert [alt.id for alt in token.alternatives] == expected.indices.tolist()
        assert [math.log(alt.prob) for alt in token.alternatives] == pytest.approx(expected.values.tolist(), abs=1e-4)
        assert [alt.bytes for alt in token.alternatives] == [bundled.tokenizer.token_bytes(i) for i in expected.indices]
        if token.rank == 1:
            assert token.alternatives[0].id == token.id
    assert score_text(bundled, CONTINUATION, prompt=PROMPT).tokens[0].alternatives == ()  # none unless asked
    with pytest.raises(BadInput, match="top_n must be a whole number in"):
        score_text(bundled, CONTINUATION, prompt=PROMPT, top_n=-1)


def test_generated_text_scores_to_the_sum_of_its_step_logprobs(bundled):
    result = bundled.generate("Once upon a time", seed=7, max_new_tokens=20, temperature=0.8)
    score = score_ids(bundled, result.prompt_ids + result.token_ids, len(result.prompt_ids))
    assert [t.id for t in score.tokens] == result.token_ids
    assert score.total_logprob == pytest.approx(sum(s.logprob for s in result.steps), abs=1e-3)
    for token, step in zip(score.tokens, result.steps):
        assert token.logprob == pytest.approx(step.logprob, abs=1e-4)  # Step.logprob is the raw model's
        assert token.rank == step.rank
        assert token.entropy == pytest.approx(step.entropy, abs=1e-3)


def test_a_text_without_prompt_is_scored_from_its_second_token(bundled):
    text = "The capital of France is Paris."
    ids = bundled.tokenizer.encode(text)
    score = score_text(bundled, text)
    assert score.ids == ids and score.prompt_length == 1  # SmolLM2 adds no BOS: the first token is context
    assert [t.id for t in score.tokens] == ids[1:]
    assert score.to_dict()["tokens"] == score_ids(bundled, ids, 1).to_dict()["tokens"]


def test_a_tokenizer_that_adds_a_bos_makes_it_the_context(bundled):
    backend = tokenizers.Tokenizer.from_str(bundled.tokenizer.backend.to_str())
    bos = bundled.tokenizer.token_to_id("<|endoftext|>")
    backend.post_processor = tokenizers.processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)]
    )
    lm = dataclasses.replace(bundled, tokenizer=Tokenizer(backend))
    plain = lm.tokenizer.encode("Hello world", add_special_tokens=False)
    score = score_text(lm, "Hello world")
    assert score.ids == [bos, *plain] and score.prompt_length == 1
    assert [t.id for t in score.tokens] == plain  # every token of the text, the first one included
    assert len(score_text(lm, "Hello").tokens) == 1  # one token is enough when a BOS precedes it


def test_prompt_and_continuation_are_tokenized_separately(bundled):
    tokenizer = bundled.tokenizer
    joined = tokenizer.encode("The cats are")
    parts = tokenizer.encode("The cat") + tokenizer.encode("s are", add_special_tokens=False)
    assert joined != parts  # "cat" + "s" would merge into " cats": no token would start at the boundary
    score = score_text(bundled, "s are", prompt="The cat")
    assert score.ids == parts and [t.id for t in score.tokens] == parts[-2:]


def test_plan_windows_scores_each_token_once():
    assert plan_windows(10, 3, 128, 64) == [(0, 3, 10)]  # fits: one forward
    assert plan_windows(300, 1, 128, 64) == [(0, 1, 128), (64, 128, 192), (128, 192, 256), (172, 256, 300)]
    assert plan_windows(300, 200, 128, 64) == [(136, 200, 264), (172, 264, 300)]  # prompt longer than the window
    assert plan_windows(130, 127, 128, 64) == [(0, 127, 128), (2, 128, 130)]


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    lm = decodelab.load(tiny_gpt2_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    text = " ".join(f"Line {i}: the quick brown fox jumps over {i * 7 % 13} lazy dogs." for i in range(40))
    ids = lm.tokenizer.encode(text)[:300]
    assert len(ids) == 300 and lm.context_length == 128
    return lm, reference, ids


@pytest.mark.parametrize("prompt_length, stride", [(1, 64), (1, 100), (200, 64), (1, 43)])
def test_long_text_is_scored_once_per_token_with_sliding_windows(tiny_gpt2, prompt_length, stride):
    lm, reference, ids = tiny_gpt2
    score = score_ids(lm, ids, prompt_length, stride=stride)
    # Every token after the prompt is scored exactly once, in order.
    assert [t.position for t in score.tokens] == list(range(prompt_length, 300))
    assert [t.id for t in score.tokens] == ids[prompt_length:]
    assert score.forwards == len(plan_windows(300, prompt_length, 128, stride)) > 1
    # Each token sees its whole history while that fits, and never less than window - stride tokens.
    for token in score.tokens:
        assert min(token.position, 128 - stride) <= token.context <= min(token.position, 127)
        if token.position < 128 and prompt_length < 128:
            assert token.context == token.position
    # Each logprob is exactly what the model gives the token after the `context` ids the score claims:
    # one reference forward per distinct first id of context, reaching to the last token that shares it.
    by_begin: dict[int, list] = {}
    for token in score.tokens:
        by_begin.setdefault(token.position - token.context, []).append(token)
    assert len(by_begin) == score.forwards
    for begin, tokens in by_begin.items():
        reference_rows = reference_logprobs(reference, ids[begin : tokens[-1].position + 1])  # row i predicts begin+i+1
        for token in tokens:
            assert token.logprob == pytest.approx(float(reference_rows[token.context - 1, token.id]), abs=1e-4)
    assert score.total_logprob == pytest.approx(sum(t.logprob for t in score.tokens))
    assert score.perplexity == pytest.approx(math.exp(-score.total_logprob / len(score.tokens)))


def test_windowed_total_equals_the_hugging_face_perplexity_guide(tiny_gpt2):
    """The guide's loop (labels -100 outside the new tokens); stride 43 makes its windows equal ours,
    since 300 - 128 = 4 * 43 (otherwise its last window starts later and sees less context than ours)."""
    lm, reference, ids = tiny_gpt2
    max_length, stride, seq_len = 128, 43, 300
    input_all = torch.tensor([ids])
    nll_sum, n_tokens, prev_end_loc = 0.0, 0, 0
    for begin_loc in range(0, seq_len, stride):
        end_loc = min(begin_loc + max_length, seq_len)
        trg_len = end_loc - prev_end_loc
        input_ids = input_all[:, begin_loc:end_loc]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = reference(input_ids, labels=target_ids).loss
        valid = int((target_ids[:, 1:] != -100).sum())  # labels shift left in the model: the first is no target
        nll_sum += float(loss) * valid
        n_tokens += valid
        prev_end_loc = end_loc
        if end_loc == seq_len:
            break
    score = score_ids(lm, ids, 1, stride=stride)
    assert n_tokens == len(score.tokens) == 299
    assert -score.total_logprob == pytest.approx(nll_sum, rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(nll_sum / n_tokens), rel=1e-5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lm: score_text(lm, ""), "text is empty: give some text to score, got ''"),
        (lambda lm: score_text(lm, "", prompt="Hello"), "text is empty"),
        (lambda lm: score_text(lm, " world", prompt=""), r"prompt is empty \(''\)"),
        (lambda lm: score_text(lm, "Hello"), "text 'Hello' is 1 token: with no prompt the first token has no context"),
        (lambda lm: score_ids(lm, [1, 2, 3], 0), r"prompt_length must be in \[1, 2\] for 3 ids.*got 0"),
        (lambda lm: score_ids(lm, [1, 2, 3], 3), r"prompt_length must be in \[1, 2\] for 3 ids.*got 3"),
        (lambda lm: score_ids(lm, [], 1), r"ids has 0 token\(s\), got \[\]: scoring needs one of context"),
        (lambda lm: score_ids(lm, [5], 1), r"ids has 1 token\(s\), got \[5\]"),
        (lambda lm: score_ids(lm, [1, "a"], 1), "ids must be a list of token ids"),
        (lambda lm: score_ids(lm, [1, 99999], 1), r"token id 99999 is outside the vocabulary \(0..49151\)"),
        (lambda lm: score_ids(lm, [1, 2], 1, stride=0), r"stride must be a whole number in \[1, 8191\].*got 0"),
        (lambda lm: score_ids(lm, [1, 2], 1, stride=8192), "got 8192"),
        (lambda lm: score_ids(lm, [1, 2], 1, nucleus_p=1.5), r"nucleus_p must be in \(0, 1\], got 1.5"),
    ],
)
def test_bad_input_is_one_clear_error(bundled, call, message):
    with pytest.raises(BadInput, match=message):
        call(bundled)


def run_cli(*argv: str) -> int:
    from decodelab.cli import OneLineErrorParser
    from decodelab.cli import score as score_command

    parser = OneLineErrorParser(prog="decodelab")
    score_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["score", *argv])
    assert isinstance(args, argparse.Namespace)
    return args.run(args)


def test_cli_table(bundled, capsys):
    assert run_cli(CONTINUATION, "--prompt", PROMPT) == 0
    out = capsys.readouterr().out
    score = score_text(bundled, CONTINUATION, prompt=PROMPT)
    lines = out.splitlines()
    assert lines[0].split() == ["pos", "id", "token", "prob", "logprob", "rank", "surprisal"]
    assert len(lines) == 1 + len(score.tokens) + 1
    assert "␣Paris" in lines[1] and f"{score.tokens[0].prob * 100:.2f}%" in lines[1]
    assert f"total logprob {score.total_logprob:.3f} nats, perplexity {score.perplexity:.3f}" in lines[-1]


def test_cli_json_and_stdin(bundled, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("The capital of France is Paris."))
    assert run_cli("-", "--json") == 0
    payload = json.loads(capsys.readouterr().out)
    score = score_text(bundled, "The capital of France is Paris.")
    assert payload["model"] == "SmolLM2-135M-Instruct"
    assert payload["scored_tokens"] == len(score.tokens) and payload["prompt_tokens"] == 1
    assert payload["total_logprob"] == pytest.approx(score.total_logprob, abs=1e-5)
    assert [t["id"] for t in payload["tokens"]] == [t.id for t in score.tokens]
    expected_fields = {"piece", "logprob", "prob", "rank", "surprisal_bits", "entropy", "nucleus_size", "context"}
    assert set(payload["tokens"][0]) >= expected_fields


def test_cli_bad_input_raises_the_one_line_error(bundled):
    with pytest.raises(BadInput, match="text is empty"):
        run_cli("")
