"""What real clients send, through the official `openai` client: echo and prompt logprobs (lm-evaluation-harness's
loglikelihood requests), several prompts in one request, long stop lists, the `developer` role, tool-call
round trips, fields that change nothing, and the 429 a busy server answers."""

from __future__ import annotations

import re
import threading
import time

import openai
import pytest

import decodelab
from decodelab.scoring import score_ids
from live_server import live_server

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def expected_token_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{byte:02x}" for byte in raw)


@pytest.mark.parametrize("prompt", [PROMPT, "한국의 수도는 서울이고"])
def test_echo_gives_the_prompts_logprobs_as_lm_score_computes_them(client, bundled, prompt):
    reply = client.completions.create(
        model=bundled.name, prompt=prompt, echo=True, max_tokens=1, logprobs=2, temperature=0
    )
    ids = bundled.tokenizer.encode(prompt)
    score = score_ids(bundled, ids, 1, top_n=2)
    logprobs = reply.choices[0].logprobs
    assert reply.choices[0].text.startswith(prompt)
    assert len(logprobs.tokens) == len(ids) + 1  # the prompt's tokens, then the generated one
    assert logprobs.tokens[: len(ids)] == [expected_token_text(bundled.tokenizer.token_bytes(i)) for i in ids]
    assert logprobs.token_logprobs[0] is None and logprobs.top_logprobs[0] is None  # nothing predicts token 0
    assert logprobs.token_logprobs[1 : len(ids)] == pytest.approx([t.logprob for t in score.tokens], abs=1e-5)
    for top, scored in zip(logprobs.top_logprobs[1 : len(ids)], score.tokens):
        alternatives = [expected_token_text(alt.bytes) for alt in scored.alternatives]
        assert list(top)[:2] == alternatives
        assert top[expected_token_text(scored.bytes)] == pytest.approx(scored.logprob, abs=1e-5)  # always listed
    greedy = bundled.generate(prompt, greedy=True, max_new_tokens=1)
    assert logprobs.token_logprobs[-1] == pytest.approx(greedy.steps[0].logprob, abs=1e-5)
    assert reply.choices[0].text == prompt + greedy.text
    assert logprobs.text_offset[: len(ids)] == sorted(logprobs.text_offset[: len(ids)])


def test_a_generated_stop_token_is_listed_in_completion_logprobs_but_not_in_the_text(client, bundled):
    stop_id = min(bundled.stop_ids())
    ask = dict(model=bundled.name, prompt=PROMPT, echo=True, max_tokens=1, logprobs=1, temperature=0)
    ask["logit_bias"] = {str(stop_id): 100}  # the model must end here: what lm-eval's scoring often meets
    reply = client.completions.create(**ask)
    choice, ids = reply.choices[0], bundled.tokenizer.encode(PROMPT)
    assert choice.text == PROMPT and choice.finish_reason == "stop" and reply.usage.completion_tokens == 1
    assert len(choice.logprobs.token_logprobs) == len(ids) + 1  # lm-eval reads token_logprobs[ctxlen:-1]
    assert choice.logprobs.tokens[-1] == bundled.tokenizer.token_bytes(stop_id).decode()
    streamed = [c.choices[0].logprobs for c in client.completions.create(stream=True, **ask) if c.choices]
    assert [lp for part in streamed if part for lp in part.token_logprobs] == choice.logprobs.token_logprobs


def test_echo_with_max_tokens_0_scores_the_prompt_only(client, bundled):
    ids = bundled.tokenizer.encode(PROMPT)
    reply = client.completions.create(model=bundled.name, prompt=[ids], echo=True, max_tokens=0, logprobs=1)
    choice = reply.choices[0]
    assert choice.text == PROMPT and choice.finish_reason == "length"
    assert choice.logprobs.token_logprobs[1:] == pytest.approx([t.logprob for t in bundled.score(PROMPT).tokens])
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(ids)
    with pytest.raises(openai.BadRequestError, match="max_tokens 0 generates nothing"):
        client.completions.create(model=bundled.name, prompt=PROMPT, max_tokens=0)


def test_streamed_echo_starts_with_the_prompt(client, bundled):
    ask = dict(model=bundled.name, prompt=PROMPT, echo=True, max_tokens=6, logprobs=1, temperature=0)
    whole = client.completions.create(**ask).choices[0]
    chunks = list(client.completions.create(stream=True, **ask))
    assert chunks[0].choices[0].text == PROMPT
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.text
    streamed = [p for c in chunks if c.choices and c.choices[0].logprobs for p in c.choices[0].logprobs.token_logprobs]
    assert streamed == whole.logprobs.token_logprobs


@pytest.mark.parametrize("as_ids", [False, True])
def test_several_prompts_give_prompt_major_choices_equal_to_their_own_requests(client, bundled, as_ids):
    texts = ["Once upon a time", "The best thing about Korea is", "1, 2, 3,"]
    prompts = [bundled.tokenizer.encode(text) for text in texts] if as_ids else texts
    ask = dict(model=bundled.name, max_tokens=8, temperature=0.9, seed=3, n=2, logprobs=1)
    together = client.completions.create(prompt=prompts, **ask)
    assert [choice.index for choice in together.choices] == list(range(6))
    for p, prompt in enumerate(prompts):
        alone = client.completions.create(prompt=[prompt] if as_ids else prompt, **ask)
        for j in range(2):
            choice = together.choices[p * 2 + j]
            assert choice.text == alone.choices[j].text
            assert choice.logprobs.token_logprobs == pytest.approx(alone.choices[j].logprobs.token_logprobs, abs=1e-4)
    streamed: dict[int, str] = {}
    for chunk in client.completions.create(prompt=prompts, stream=True, **ask):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert [streamed[i] for i in range(6)] == [choice.text for choice in together.choices]
    assert together.usage.prompt_tokens == sum(len(bundled.tokenizer.encode(text)) for text in texts)


def test_a_bad_prompt_among_several_is_named(client, bundled):
    with pytest.raises(openai.BadRequestError, match=r"prompt\[1\] is empty"):
        client.completions.create(model=bundled.name, prompt=["fine", ""], max_tokens=2)
    with pytest.raises(openai.BadRequestError, match=r"prompt\[1\]: token id 999999"):
        client.completions.create(model=bundled.name, prompt=[[1, 2], [999999]], max_tokens=2)


def test_long_stop_lists_work_up_to_the_stated_cap(client, bundled):
    from decodelab.server.openai_schemas import MAX_STOP_STRINGS

    stops = ["zzz", "qqq", "xyz", "<|im_end|>", "\n\n", ","]
    reply = client.completions.create(
        model=bundled.name, prompt="Count: 1, 2, 3", max_tokens=16, temperature=0, stop=stops
    )
    assert reply.choices[0].finish_reason == "stop" and "," not in reply.choices[0].text
    many = [f"stop{i}" for i in range(MAX_STOP_STRINGS)]
    client.completions.create(model=bundled.name, prompt="Hi", max_tokens=1, stop=many)
    with pytest.raises(openai.BadRequestError, match=f"at most {MAX_STOP_STRINGS} stop strings"):
        client.completions.create(model=bundled.name, prompt="Hi", max_tokens=1, stop=[*many, "one more"])


def test_developer_role_is_rendered_as_system(client, bundled):
    ask = dict(model=bundled.name, temperature=0, max_tokens=12)
    question = {"role": "user", "content": "Who are you?"}
    as_developer = client.chat.completions.create(
        messages=[{"role": "developer", "content": "You are a pirate."}, question], **ask
    )
    as_system = client.chat.completions.create(
        messages=[{"role": "system", "content": "You are a pirate."}, question], **ask
    )
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content
    ids = bundled.chat_tokens([{"role": "system", "content": "You are a pirate."}, question]).ids
    assert as_developer.usage.prompt_tokens == len(ids)


def test_fields_that_change_nothing_are_accepted_and_change_nothing(client, bundled):
    ask = dict(model=bundled.name, messages=[{"role": "user", "content": "Hi!"}], temperature=0, max_tokens=8)
    plain = client.chat.completions.create(**ask).choices[0].message.content
    decorated = client.chat.completions.create(
        store=False,
        metadata={"run": "1"},
        user="learner-7",
        parallel_tool_calls=False,
        service_tier="auto",
        response_format={"type": "text"},
        tool_choice="none",
        stream_options={"include_usage": True},
        extra_body={"prompt_cache_key": "k", "safety_identifier": "s"},
        **ask,
    )
    assert decorated.choices[0].message.content == plain
    chunks = list(
        client.chat.completions.create(
            stream=True, stream_options={"include_usage": True, "continuous_usage_stats": True}, **ask
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == plain
    assert all(chunk.usage is not None for chunk in chunks)  # vLLM's continuous usage: in every chunk
    assert chunks[-1].usage.completion_tokens == decorated.usage.completion_tokens


def test_the_readme_lists_exactly_the_ignored_fields():
    from pathlib import Path

    from decodelab.server.openai_schemas import ignored_field_names

    readme = Path(__file__).parents[1].joinpath("README.md").read_text()
    listing = readme.split("Accepted and ignored, as they cannot change the output: ")[1].split(".\n")[0]
    assert re.findall(r"`(\w+)`", listing) == ignored_field_names()


WEATHER_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Seoul"}'},
}
ROUND_TRIP = [
    {"role": "user", "content": "What is the weather in Seoul?"},
    {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "clear", "celsius": 25}'},
]
TOOL_TEMPLATE = """{% for message in messages %}<|im_start|>{{ message.role }}
{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>{"name": "{{ call.function.name }}", \
"arguments": {{ call.function.arguments | tojson }}}</tool_call>{% endfor %}{% elif message.role == 'tool' %}\
<tool_response id="{{ message.tool_call_id }}">{{ message.content }}</tool_response>{% else %}{{ message.content }}\
{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


def test_a_tool_call_round_trip_renders_as_transformers_renders_it(make_tiny_llama):
    from transformers import AutoTokenizer

    directory = make_tiny_llama("tool-template")
    (directory / "chat_template.jinja").write_text(TOOL_TEMPLATE)
    lm = decodelab.load(str(directory))
    reference = AutoTokenizer.from_pretrained(directory)
    as_templates_take_it = [
        {**m, "tool_calls": [{**WEATHER_CALL, "function": {"name": "get_weather", "arguments": {"city": "Seoul"}}}]}
        if m.get("tool_calls")
        else m
        for m in ROUND_TRIP
    ]
    expected = reference.apply_chat_template(as_templates_take_it, tokenize=False, add_generation_prompt=True)
    assert '"name": "get_weather", "arguments": {"city": "Seoul"}' in expected and "celsius" in expected
    with live_server(lm) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(model=lm.name, messages=ROUND_TRIP, max_tokens=4, temperature=0)
    assert reply.usage.prompt_tokens == len(reference(expected, add_special_tokens=False)["input_ids"])
    assert lm.chat_prompt(as_templates_take_it) == expected


def test_a_template_that_cannot_show_tool_calls_refuses_them(client, bundled):
    with pytest.raises(openai.BadRequestError, match="does not show tool calls") as refused:
        client.chat.completions.create(model=bundled.name, messages=ROUND_TRIP, max_tokens=2)
    assert "get_weather" in refused.value.message
    with pytest.raises(openai.BadRequestError, match="tool_call_id"):
        client.chat.completions.create(
            model=bundled.name, messages=[{"role": "tool", "content": "25 degrees"}], max_tokens=2
        )


def test_a_busy_server_answers_429_with_retry_after(bundled):
    endless = dict(model=bundled.name, prompt="Count: 1, 2,", max_tokens=2000, stream=True)
    endless["extra_body"] = {"logit_bias": {str(i): -100 for i in bundled.stop_ids()}}
    with live_server(bundled, max_batch=1, max_queue=1) as running:
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        stats, waiting_reply = running.state.runner.stats, []
        with (  # paused after its first token, the stream holds its row until it is closed: no race with its end
            running.paused_when(lambda: stats.tokens >= 1),
            client.completions.create(**endless) as running_stream,  # returns once it runs
        ):
            waiting = threading.Thread(
                target=lambda: waiting_reply.append(
                    client.completions.create(model=bundled.name, prompt="Hi", max_tokens=1)
                )
            )
            waiting.start()
            deadline = time.monotonic() + 60
            while stats.active < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert stats.active == 2  # one running, one waiting: the server is full
            with pytest.raises(openai.RateLimitError) as refused:
                client.completions.create(model=bundled.name, prompt="Hi", max_tokens=1)
            assert int(refused.value.response.headers["retry-after"]) >= 1
            next(iter(running_stream))
        waiting.join(timeout=120)
        assert waiting_reply and waiting_reply[0].usage.completion_tokens == 1  # served once the row was free
