"""The next-token distribution is exactly transformers' softmax over the last position's logits."""

import math
from itertools import pairwise

import pytest
import torch

import decodelab


@pytest.mark.parametrize("prompt", ["The capital of France is", "Transformers are the", "1, 2, 3, 4,"])
def test_probabilities_equal_transformers_softmax(bundled, bundled_hf, prompt):
    dist = bundled.next_token_distribution(prompt)
    ids = torch.tensor([bundled.tokenizer.encode(prompt)])
    with torch.no_grad():
        expected = torch.softmax(bundled_hf(ids).logits[0, -1], dim=-1)
    torch.testing.assert_close(dist.probs, expected, rtol=1e-4, atol=1e-6)
    top = dist.top(10)
    assert [c.id for c in top] == expected.topk(10).indices.tolist()
    assert all(a.prob >= b.prob for a, b in pairwise(top))  # sorted, most likely first
    assert sum(c.prob for c in top) <= 1.0 + 1e-6
    assert [c.rank for c in top] == list(range(1, 11))
    for c in top:
        assert math.isclose(c.logprob, math.log(c.prob), rel_tol=1e-4, abs_tol=1e-5)
        assert c.piece == bundled.tokenizer.decode([c.id]) or "<0x" in c.piece


def test_entropy_and_rank_follow_their_definitions(bundled):
    dist = bundled.next_token_distribution("The capital of France is")
    p = dist.probs.double()
    expected_entropy = float(-(p[p > 0] * p[p > 0].log()).sum())
    assert math.isclose(dist.entropy, expected_entropy, rel_tol=1e-4)
    paris = bundled.tokenizer.encode(" Paris")[0]
    assert dist.top(1)[0].id == paris and dist.rank(paris) == 1
    second = dist.top(2)[1]
    assert dist.rank(second.id) == 2


def test_full_distribution_is_returned(bundled):
    dist = bundled.next_token_distribution("Hello")
    assert dist.probs.shape == (bundled.backend.vocab_size,)
    # float32 softmax over 49,152 entries: its sum strays from 1 by ~1e-5 (1.3e-5 for this prompt)
    assert math.isclose(float(dist.probs.double().sum()), 1.0, rel_tol=1e-4)
    assert dist.prompt_ids == bundled.tokenizer.encode("Hello")


def test_chat_distribution_conditions_on_the_rendered_template(bundled):
    plain = bundled.next_token_distribution("What is the capital of France?")
    chat = bundled.next_token_distribution("What is the capital of France?", chat=True)
    assert chat.prompt_ids == bundled.chat_tokens("What is the capital of France?").ids
    assert chat.prompt_ids[-3:] == bundled.tokenizer.encode("<|im_start|>assistant\n", add_special_tokens=False)[-3:]
    assert not torch.allclose(plain.probs, chat.probs)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lm: lm.next_token_distribution(""), "prompt is empty"),
        (lambda lm: lm.next_token_distribution("Hi").top(0), "top must be a positive number of tokens, got 0"),
        (lambda lm: lm.next_token_distribution(list(range(5, 5 + 8193))), "prompt is 8193 tokens but .* at most 8192"),
        (lambda lm: lm.tokenize(""), "text is empty"),
    ],
)
def test_bad_input_is_one_clear_error(bundled, call, message):
    with pytest.raises(decodelab.DecodelabError, match=message):
        call(bundled)
