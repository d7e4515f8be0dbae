"""The official `openai` client against decodelab's server: outputs and logprobs equal the engine's Steps."""

from __future__ import annotations

import math

import openai
import pytest

CHAT = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_served_model(client, bundled):
    assert [model.id for model in client.models.list().data] == [bundled.name]


def test_greedy_chat_equals_the_engine_with_logprobs_from_its_steps(client, bundled):
    reply = client.chat.completions.create(
        model=bundled.name, messages=CHAT, temperature=0, max_tokens=24, logprobs=True, top_logprobs=3
    )
    result = bundled.generate(CHAT, chat=True, greedy=True, max_new_tokens=24, top_n=3)
    choice = reply.choices[0]
    assert choice.message.content == result.text
    assert choice.finish_reason == ("stop" if result.stop_reason.kind == "stop_token" else "length")
    text_steps = result.steps[:-1] if result.stop_reason.kind == "stop_token" else result.steps
    assert [entry.token for entry in choice.logprobs.content] == [step.piece for step in text_steps]
    for entry, step in zip(choice.logprobs.content, text_steps):
        assert entry.logprob == pytest.approx(step.logprob, abs=1e-6)
        assert bytes(entry.bytes) == bundled.tokenizer.token_bytes(step.token_id)
        assert [top.token for top in entry.top_logprobs] == [alt.piece for alt in step.raw_top]
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx([math.log(a.prob) for a in step.raw_top])
    assert reply.usage.prompt_tokens == len(result.prompt_ids)
    assert reply.usage.completion_tokens == len(result.token_ids)


def test_completion_logprobs_equal_the_steps(client, bundled):
    prompt = "The capital of France is"
    reply = client.completions.create(
        model=bundled.name, prompt=prompt, max_tokens=10, temperature=0.8, top_p=0.9, seed=11, logprobs=4
    )
    result = bundled.generate(prompt, temperature=0.8, top_p=0.9, seed=11, max_new_tokens=10, top_n=4)
    choice = reply.choices[0]
    assert choice.text == result.text
    assert choice.logprobs.tokens == [step.piece for step in result.steps]
    assert choice.logprobs.token_logprobs == pytest.approx([step.logprob for step in result.steps], abs=1e-6)
    assert [list(top) for top in choice.logprobs.top_logprobs] == [[a.piece for a in s.raw_top] for s in result.steps]


def test_seeded_requests_repeat_and_choice_i_uses_seed_plus_i(client, bundled):
    ask = dict(model=bundled.name, messages=CHAT, temperature=1.0, max_tokens=16)
    first = client.chat.completions.create(seed=5, n=2, **ask)
    again = client.chat.completions.create(seed=5, n=2, **ask)
    alone = client.chat.completions.create(seed=6, **ask)
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert first.choices[1].message.content == alone.choices[0].message.content
    assert first.choices[0].message.content == bundled.generate(CHAT, chat=True, seed=5, max_new_tokens=16).text


def test_streamed_chat_equals_the_whole_reply(client, bundled):
    ask = dict(model=bundled.name, messages=CHAT, temperature=0.7, seed=3, max_tokens=20, logprobs=True)
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **ask))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    logprobs = [e.logprob for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    assert text == whole.choices[0].message.content
    assert logprobs == [entry.logprob for entry in whole.choices[0].logprobs.content]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_streamed_korean_completion_never_splits_a_character(client, bundled):
    ask = dict(model=bundled.name, prompt="안녕하세요, 저는", temperature=0, max_tokens=24)
    pieces = [chunk.choices[0].text for chunk in client.completions.create(stream=True, **ask)]
    assert all("\ufffd" not in piece for piece in pieces)
    assert (
        "".join(pieces)
        == client.completions.create(**ask).choices[0].text
        == bundled.generate(ask["prompt"], greedy=True, max_new_tokens=24).text
    )


def test_stop_strings_and_extra_samplers(client, bundled):
    reply = client.completions.create(
        model=bundled.name,
        prompt="1, 2, 3, 4,",
        max_tokens=20,
        temperature=0,
        stop=[" 7"],
        extra_body={"top_k": 5, "repetition_penalty": 1.0},
    )
    expected = bundled.generate("1, 2, 3, 4,", greedy=True, max_new_tokens=20, stop=(" 7",))
    assert reply.choices[0].text == expected.text
    assert " 7" not in reply.choices[0].text
    assert reply.choices[0].finish_reason == ("stop" if expected.stop_reason.kind == "stop_string" else "length")


def test_logit_bias_bans_a_token(client, bundled):
    prompt = "The capital of France is"
    banned = bundled.generate(prompt, greedy=True, max_new_tokens=1).token_ids[0]
    reply = client.completions.create(
        model=bundled.name, prompt=prompt, max_tokens=4, temperature=0, logit_bias={str(banned): -100}, logprobs=1
    )
    assert banned not in [
        bundled.tokenizer.encode(t, add_special_tokens=False)[0] for t in reply.choices[0].logprobs.tokens[:1]
    ]
    assert (
        reply.choices[0].text
        == bundled.generate(prompt, greedy=True, max_new_tokens=4, logit_bias={banned: -100.0}).text
    )
