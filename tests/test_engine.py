"""The generation loop: equal to transformers' generate(), seeded, stopping right, streaming whole characters."""

import pytest
import torch

import decodelab

PROMPTS = ["Transformers are the", "Once upon a time, in a small village,", "def fibonacci(n):", "서울은 한국의"]


def hf_greedy(model, ids: list[int], max_new_tokens: int, stop_ids) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            eos_token_id=sorted(stop_ids),
            pad_token_id=sorted(stop_ids)[0],
        )
    return out[0, len(ids) :].tolist()


@pytest.mark.slow
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_equals_transformers_generate_on_the_bundled_model(bundled, bundled_hf, prompt):
    ours = bundled.generate(prompt, greedy=True, max_new_tokens=64)
    expected = hf_greedy(bundled_hf, bundled.prompt_ids(prompt), 64, bundled.stop_ids())
    assert ours.token_ids == expected
    assert len(ours.token_ids) == 64 or ours.stop_reason.kind == "stop_token"


@pytest.mark.slow
def test_greedy_chat_equals_transformers_generate(bundled, bundled_hf):
    prompt = "What is the capital of France? Answer in one sentence."
    ours = bundled.generate(
        prompt, chat=True, system="You are a helpful geography tutor.", greedy=True, max_new_tokens=64
    )
    ids = bundled.prompt_ids(prompt, chat=True, system="You are a helpful geography tutor.")
    assert ours.token_ids == hf_greedy(bundled_hf, ids, 64, bundled.stop_ids())
    assert ours.stop_reason.kind == "stop_token" and ours.stop_reason.token_id == ours.token_ids[-1]
    assert "<|im_end|>" not in ours.text and "Paris" in ours.text


@pytest.mark.parametrize("prompt", ["Transformers are the", "Hello world", "안녕"])
def test_greedy_on_a_tiny_random_gpt2_equals_generate(tiny_gpt2_dir, prompt):
    from transformers import AutoModelForCausalLM

    lm = decodelab.load(tiny_gpt2_dir)
    reference = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    ours = lm.generate(prompt, greedy=True, max_new_tokens=64, stop_token_ids=())
    assert ours.token_ids == hf_greedy(reference, lm.prompt_ids(prompt), 64, {50256})[: len(ours.token_ids)]
    assert len(ours.token_ids) == 64


def test_greedy_with_repetition_penalty_and_ngram_block_equals_generate(bundled, bundled_hf):
    prompt = "The cat sat on the mat. The cat sat on the"
    ours = bundled.generate(prompt, greedy=True, max_new_tokens=24, repetition_penalty=1.3, no_repeat_ngram_size=3)
    with torch.no_grad():
        out = bundled_hf.generate(
            torch.tensor([bundled.prompt_ids(prompt)]),
            do_sample=False,
            max_new_tokens=24,
            repetition_penalty=1.3,
            no_repeat_ngram_size=3,
            eos_token_id=sorted(bundled.stop_ids()),
            pad_token_id=0,
        )
    assert ours.token_ids == out[0, len(bundled.prompt_ids(prompt)) :].tolist()


def test_step_records_equal_a_full_forward_at_every_position(bundled, bundled_hf):
    """The cached loop's raw distribution at each step is the uncached model's (logprob, rank, top)."""
    result = bundled.generate("The quick brown fox", seed=3, temperature=0.9, max_new_tokens=12)
    ids = torch.tensor([result.prompt_ids + result.token_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(bundled_hf(ids).logits[0], dim=-1)  # (T, V)
    start = len(result.prompt_ids) - 1
    for step in result.steps:
        row = logprobs[start + step.index]
        assert step.logprob == pytest.approx(float(row[step.token_id]), abs=1e-4)
        assert step.rank == int((row > row[step.token_id]).sum()) + 1
        assert [a.id for a in step.raw_top[:3]] == row.topk(3).indices.tolist()
        assert step.prob == pytest.approx(float((row / 0.9).softmax(-1)[step.token_id]), abs=1e-4)


def test_seeds_reproduce_and_differ(bundled):
    options = dict(max_new_tokens=20, temperature=1.0, top_k=40)
    first = bundled.generate("Once upon a time", seed=11, **options)
    again = bundled.generate("Once upon a time", seed=11, **options)
    other = bundled.generate("Once upon a time", seed=12, **options)
    assert first.token_ids == again.token_ids and first.seed == 11
    assert first.token_ids != other.token_ids
    unseeded = bundled.generate("Once upon a time", **options)
    assert bundled.generate("Once upon a time", seed=unseeded.seed, **options).token_ids == unseeded.token_ids


def test_batch_rows_are_reproducible_by_seed(bundled):
    rows = bundled.sample("Once upon a time", n=3, seed=40, max_new_tokens=16, top_p=0.95)
    assert [r.seed for r in rows] == [40, 41, 42]
    assert len({tuple(r.token_ids) for r in rows}) == 3
    assert [r.token_ids for r in bundled.sample("Once upon a time", n=3, seed=40, max_new_tokens=16, top_p=0.95)] == [
        r.token_ids for r in rows
    ]
    for row in rows:
        alone = bundled.generate("Once upon a time", seed=row.seed, max_new_tokens=16, top_p=0.95)
        assert alone.token_ids == row.token_ids


def test_stop_string_spanning_tokens_is_trimmed(bundled):
    free = bundled.generate("Transformers are the", greedy=True, max_new_tokens=12)
    pieces = [s.piece for s in free.steps]  # ' most', ' efficient', ' way', ...
    stop = pieces[2][-2:] + pieces[3][:2]  # the end of one token and the start of the next
    assert len(bundled.tokenizer.encode(stop, add_special_tokens=False)) >= 1
    stopped = bundled.generate("Transformers are the", greedy=True, max_new_tokens=12, stop=[stop])
    assert stopped.stop_reason.kind == "stop_string" and stopped.stop_reason.string == stop
    assert stopped.text == free.text[: free.text.index(stop)]
    assert len(stopped.token_ids) == 4  # stops as soon as the string is complete


def test_stop_token_and_max_new_tokens_and_max_time(bundled):
    chat = bundled.generate("Say hi.", chat=True, greedy=True, max_new_tokens=64)
    assert chat.stop_reason.kind == "stop_token" and chat.stop_reason.token_id in bundled.stop_ids()
    assert chat.token_ids[-1] == chat.stop_reason.token_id
    capped = bundled.generate("Once upon a time", greedy=True, max_new_tokens=5)
    assert capped.stop_reason.kind == "max_new_tokens" and len(capped.token_ids) == 5
    timed = bundled.generate("Once upon a time", greedy=True, max_new_tokens=500, max_time=0.2)
    assert timed.stop_reason.kind == "max_time" and 1 <= len(timed.token_ids) < 500 and timed.elapsed < 5


def test_korean_streaming_never_breaks_a_character(bundled):
    result = bundled.generate("서울은 한국의", greedy=True, max_new_tokens=40)
    assert sum(step.piece.startswith("<0x") for step in result.steps) > 5  # characters split over tokens
    deltas = list(bundled.stream("서울은 한국의", greedy=True, max_new_tokens=40))
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == result.text
    assert any("\uac00" <= ch <= "\ud7a3" for ch in result.text)  # Hangul syllables came out whole


def test_streaming_never_shows_a_stop_string(bundled):
    free = bundled.generate("Transformers are the", greedy=True, max_new_tokens=12)
    stop = free.text[10:16]
    deltas = list(bundled.stream("Transformers are the", greedy=True, max_new_tokens=12, stop=[stop]))
    assert "".join(deltas) == free.text[:10] and stop not in "".join(deltas)


def test_untraced_generation_chooses_the_same_tokens(bundled):
    traced = bundled.generate("The meaning of life is", seed=5, top_p=0.9, max_new_tokens=10)
    plain = bundled.generate("The meaning of life is", seed=5, top_p=0.9, max_new_tokens=10, trace=False)
    assert plain.token_ids == traced.token_ids
    assert plain.steps[0].top == () and traced.steps[0].stages[0].name == "top_p"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
        (dict(temperature=-1), "temperature must be at least 0.0001 .*got -1"),
        (dict(top_k=-1), "top_k must be a whole number >= 1 .*got -1"),
        (dict(samplers=("top_q",)), "unknown sampler 'top_q'"),
        (dict(max_new_tokens=0), "max_new_tokens must be a whole number >= 1, got 0"),
        (dict(tempreature=0.5), "unknown generation option 'tempreature'"),
    ],
)
def test_bad_parameters_name_the_value(bundled, options, message):
    with pytest.raises(decodelab.DecodelabError, match=message):
        bundled.generate("Hi", **options)


def test_prompt_longer_than_the_context(tiny_gpt2_dir):
    lm = decodelab.load(tiny_gpt2_dir)
    with pytest.raises(decodelab.DecodelabError, match="prompt is 200 tokens but .* at most 128"):
        lm.generate(list(range(1, 201)))
    with pytest.raises(decodelab.DecodelabError, match="leaving no room to generate"):
        lm.generate(list(range(1, 129)))
    full = lm.generate(list(range(1, 120)), greedy=True, max_new_tokens=50, stop_token_ids=())
    # 119 prompt + 9 fed tokens fill the 128 positions; the 10th is predicted from them and never fed.
    assert full.stop_reason.kind == "context_full" and len(full.token_ids) == 10
