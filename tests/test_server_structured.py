"""Structured output through the official clients: `response_format` (the `openai` client's `parse()` with a
pydantic model, JSON objects), vLLM's `structured_outputs`, and tools — forced calls (`tool_choice` "required"
or a named function), whole and streamed as tool-call deltas, a round trip, "auto" on a template that writes
`<tool_call>` blocks — and LangChain's `with_structured_output`."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import httpx
import jsonschema
import openai
import pydantic
import pytest

import decodelab
from decodelab.server.tool_calls import ForcedCalls, TaggedCalls
from live_server import live_server


class City(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")  # additionalProperties: false, as strict schemas are

    name: str = pydantic.Field(max_length=16)
    country: str = pydantic.Field(max_length=16)
    population_millions: float
    rank: int = pydantic.Field(ge=1, le=10)
    kind: str = pydantic.Field(json_schema_extra={"enum": ["capital", "port", "town"]})


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 16},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["KST", "UTC"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
PARAMETERS = {tool["function"]["name"]: tool["function"]["parameters"] for tool in (WEATHER, TIME)}
ASK = [{"role": "user", "content": "What is the weather in Seoul?"}]
README = Path(__file__).parent.parent / "README.md"
OFFER = {"messages": ASK, "tools": [WEATHER, TIME]}  # a question and the two functions, as most tests ask


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def check_calls(calls) -> None:
    """Each call names an offered function, and its arguments validate under that function's parameters."""
    assert calls
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS[call.function.name])


# --- response_format and structured_outputs ----------------------------------------------------------------------


def test_parse_with_a_pydantic_model_returns_the_model(client, bundled):
    reply = client.chat.completions.parse(
        model=bundled.name,
        messages=[{"role": "user", "content": "Describe Seoul as JSON."}],
        response_format=City,
        max_tokens=120,
        temperature=0,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    assert City.model_validate_json(choice.message.content) == choice.message.parsed


def test_sampled_json_validates_under_the_schema(client, bundled):
    schema = City.model_json_schema()
    reply = client.chat.completions.create(
        model=bundled.name,
        messages=[{"role": "user", "content": "A city as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "City", "schema": schema, "strict": True}},
        max_tokens=120,
        temperature=1.0,
        n=3,
        seed=7,
    )
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content), schema)


def test_json_object_streams_the_same_json(client, bundled):
    ask = dict(
        model=bundled.name,
        messages=[{"role": "user", "content": "Give me a JSON object about cats."}],
        response_format={"type": "json_object"},
        max_tokens=40,
        temperature=0,
    )
    whole = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert streamed == whole.choices[0].message.content
    if whole.choices[0].finish_reason == "stop":  # complete within 40 tokens: a whole object
        assert isinstance(json.loads(streamed), dict)
    assert streamed.startswith("{")


@pytest.mark.parametrize(
    ("outputs", "check"),
    [
        ({"choice": [" yes", " no", " maybe"]}, lambda text: text in (" yes", " no", " maybe")),
        ({"regex": " [0-9]{4}"}, lambda text: len(text) == 5 and text[1:].isdigit()),
    ],
)
def test_vllms_structured_outputs_constrain_completions(client, bundled, outputs, check):
    reply = client.completions.create(
        model=bundled.name,
        prompt="Question: is it raining? Answer:",
        max_tokens=12,
        temperature=1.0,
        n=4,
        seed=3,
        extra_body={"structured_outputs": outputs},
    )
    for choice in reply.choices:
        assert check(choice.text), choice.text
        assert choice.finish_reason == "stop"


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": 5}}}},
            "response_format",
            "does not compile",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format", '"json_schema": {"name"'),
        ({"structured_outputs": {"regex": "(", "choice": ["a"]}}, "structured_outputs", "one constraint at a time"),
        ({"structured_outputs": {"regex": "("}}, "structured_outputs", "does not compile"),
        (
            {"response_format": {"type": "json_object"}, "structured_outputs": {"regex": "a+"}},
            "response_format",
            "send one of them",
        ),
        (
            {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
            "send one of them",
        ),
        ({"tools": [WEATHER]}, "tool_choice", '"required"'),
        ({"structured_outputs": {"choice": ["option"] * 3000}}, "structured_outputs", "at most 20000"),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_time"}}},
            "tool_choice",
            "not among tools",
        ),
        ({"tool_choice": "required"}, "tool_choice", "no tools are given"),
        ({"tools": [WEATHER, WEATHER], "tool_choice": "required"}, "tools", "twice"),
        (
            {
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
                "tool_choice": "required",
            },
            "tools",
            "of an object",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "two words"}}], "tool_choice": "required"},
            "tools.0.function.name",
            None,
        ),
    ],
)
def test_a_constraint_that_cannot_be_honoured_is_one_400_naming_its_field(client, bundled, extra, param, words):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=bundled.name, messages=ASK, max_tokens=4, extra_body=extra)
    error = refused.value.body
    assert error["param"] == param, error
    assert words is None or words in error["message"], error["message"]


# --- tools ---------------------------------------------------------------------------------------------------


def test_required_tools_make_valid_calls(client, bundled):
    reply = client.chat.completions.create(
        model=bundled.name,
        **OFFER,
        tool_choice="required",
        max_tokens=80,
        temperature=1.0,
        n=3,
        seed=11,
    )
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        check_calls(choice.message.tool_calls)


def test_a_named_function_or_no_parallel_calls_make_one_call(client, bundled):
    named = client.chat.completions.create(
        model=bundled.name,
        **OFFER,
        max_tokens=60,
        temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    (call,) = named.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    check_calls([call])
    single = client.chat.completions.create(
        model=bundled.name,
        **OFFER,
        tool_choice="required",
        max_tokens=80,
        parallel_tool_calls=False,
        temperature=1.0,
        seed=5,
    )
    assert len(single.choices[0].message.tool_calls) == 1


def test_streamed_tool_call_deltas_add_up_to_the_whole_reply(client, bundled):
    ask = dict(model=bundled.name, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", max_tokens=80, seed=2)
    whole = client.chat.completions.create(**ask, temperature=0.8)
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**ask, temperature=0.8, stream=True):
        for delta_call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            call = calls.setdefault(delta_call.index, {"id": None, "name": "", "arguments": ""})
            call["id"] = call["id"] or delta_call.id
            call["name"] += (delta_call.function.name or "") if delta_call.function else ""
            call["arguments"] += (delta_call.function.arguments or "") if delta_call.function else ""
        finish = (chunk.choices[0].finish_reason if chunk.choices else None) or finish
    expected = [(c.function.name, c.function.arguments) for c in whole.choices[0].message.tool_calls]
    assert [(calls[i]["name"], calls[i]["arguments"]) for i in sorted(calls)] == expected
    assert finish == "tool_calls"
    # the SDK's own stream helper assembles the same calls
    with client.chat.completions.stream(**ask, temperature=0.8) as stream:
        final = stream.get_final_completion()
    assert [(c.function.name, c.function.arguments) for c in final.choices[0].message.tool_calls] == expected


HERMES_TEMPLATE = """{% if tools %}<|im_start|>system
You may call these tools:
{% for tool in tools %}{{ tool.function | tojson }}
{% endfor %}Call one as <tool_call>{"name": ..., "arguments": {...}}</tool_call><|im_end|>
{% endif %}{% for message in messages %}<|im_start|>{{ message.role }}
{% if message.tool_calls %}{% for call in message.tool_calls %}<tool_call>{"name": "{{ call.function.name }}", \
"arguments": {{ call.function.arguments | tojson }}}</tool_call>{% endfor %}{% elif message.role == 'tool' %}\
<tool_response>{{ message.content }}</tool_response>{% else %}{{ message.content }}{% endif %}<|im_end|>
{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@pytest.fixture(scope="module")
def hermes(make_tiny_llama):
    """A tiny random Llama whose template shows tools and tool calls, Qwen/Hermes style, on its own server."""
    directory = make_tiny_llama("hermes-template", max_position_embeddings=1024)
    (directory / "chat_template.jinja").write_text(HERMES_TEMPLATE)
    lm = decodelab.load(str(directory))
    with live_server(lm) as running:
        yield lm, openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_a_tool_round_trip_with_required_calls(hermes):
    lm, client = hermes
    first = client.chat.completions.create(
        model=lm.name,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,  # a random model would call again and again
        max_tokens=60,
        temperature=0,
    )
    (call,) = first.choices[0].message.tool_calls
    check_calls([call])
    tools_shown = lm.prompt_ids(ASK, chat=True, tools=[WEATHER])
    assert first.usage.prompt_tokens == len(tools_shown) > len(lm.prompt_ids(ASK, chat=True))  # the template shows them
    root = str(client.base_url).removesuffix("/v1/")
    tokenized = httpx.post(root + "/tokenize", json={"messages": ASK, "tools": [WEATHER]}).json()
    assert tokenized["tokens"] == tools_shown  # vLLM's /tokenize renders the tools as the chat route does
    called = {
        "id": call.id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": call.function.arguments},
    }
    result = {"role": "tool", "tool_call_id": call.id, "content": '{"sky": "clear", "celsius": 25}'}
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [called]}, result]
    answer = client.chat.completions.create(
        model=lm.name, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=3, temperature=0
    )
    assert answer.choices[0].message.tool_calls is None
    as_templates_take_it = [
        *ASK,
        history[1]
        | {
            "tool_calls": [
                called | {"function": {"name": "get_weather", "arguments": json.loads(call.function.arguments)}}
            ]
        },
        result,
    ]
    rendered = lm.chat_prompt(as_templates_take_it)  # tool_choice "none": the tools are not shown
    assert call.function.arguments.split('"')[3] in rendered and "celsius" in rendered  # the city it called with
    assert answer.usage.prompt_tokens == len(lm.tokenizer.encode(rendered, add_special_tokens=False))


def test_auto_takes_tagged_calls_out_of_the_text(hermes):
    lm, client = hermes
    called = r'Let me check\. <tool_call>\{"name": "get_weather", "arguments": \{"city": "(Seoul|Busan)", "unit": "celsius"\}\}</tool_call>'
    ask = dict(model=lm.name, messages=ASK, tools=[WEATHER, TIME], max_tokens=80, temperature=1.0, seed=9)
    reply = client.chat.completions.create(**ask, extra_body={"structured_outputs": {"regex": called}})
    message = reply.choices[0].message
    assert message.content == "Let me check. "
    check_calls(message.tool_calls)
    assert reply.choices[0].finish_reason == "tool_calls"
    with client.chat.completions.stream(**ask, extra_body={"structured_outputs": {"regex": called}}) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == message.content
    assert final.choices[0].message.tool_calls[0].function.arguments == message.tool_calls[0].function.arguments
    free = client.chat.completions.create(**{**ask, "temperature": 0})  # no call written: the text is the answer
    expected = lm.generate(lm.prompt_ids(ASK, chat=True, tools=[WEATHER, TIME]), greedy=True, max_new_tokens=80)
    assert free.choices[0].message.content == expected.text
    assert free.choices[0].message.tool_calls is None


# --- the parsers, fed a character at a time as a stream feeds them ----------------------------------------------


def replay(parser, text: str, pieces: list[str]) -> tuple[list[dict], str, list]:
    deltas = [d for piece in pieces for d in parser.feed(piece)] + parser.finish()
    return deltas, parser.message_content(), [(c["function"]["name"], c["function"]["arguments"]) for c in parser.calls]


@pytest.mark.parametrize(
    ("parser", "text", "content", "calls"),
    [
        (
            ForcedCalls,
            '[{"name":"f","arguments":{"a":"}]{\\"x"}},{"name":"g","arguments":{}}]',
            None,
            [("f", '{"a":"}]{\\"x"}'), ("g", "{}")],
        ),
        (
            TaggedCalls,
            'Sure <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>\n',
            "Sure ",
            [("f", '{"a": 1}')],
        ),
        (
            TaggedCalls,
            "a <tool_ca b <tool_call>not json</tool_call>",
            "a <tool_ca b <tool_call>not json</tool_call>",
            [],
        ),
        (TaggedCalls, 'text <tool_call>{"name": "f"', 'text <tool_call>{"name": "f"', []),
    ],
)
def test_parsers_read_the_same_calls_whole_or_a_character_at_a_time(parser, text, content, calls):
    whole = replay(parser(), text, [text])
    by_character = replay(parser(), text, list(text))
    assert whole[1:] == by_character[1:] == (content, calls)
    streamed_arguments = "".join(
        d["tool_calls"][0]["function"]["arguments"] for d in by_character[0] if "tool_calls" in d
    )
    assert streamed_arguments == "".join(arguments for _, arguments in calls)


# --- LangChain -----------------------------------------------------------------------------------------------


def test_langchains_with_structured_output_and_bind_tools(server, bundled):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model=bundled.name, base_url=server.url + "/v1", api_key="unused", temperature=0, max_tokens=120, max_retries=0
    )
    city = chat.with_structured_output(City).invoke("Describe Seoul as JSON.")
    assert isinstance(city, City)
    reply = chat.bind_tools([WEATHER], tool_choice="get_weather").invoke("Weather in Seoul?")
    (call,) = reply.tool_calls
    assert call["name"] == "get_weather"
    jsonschema.validate(call["args"], PARAMETERS["get_weather"])


def test_the_readmes_client_example_runs_against_the_server(server, capsys):
    from readme_examples import code_blocks

    (example,) = [block for block in code_blocks(README.read_text(), "py") if "completions.parse" in block]
    runnable = textwrap.dedent(example).replace("http://127.0.0.1:8000", server.url)
    exec(compile(runnable, "README.md", "exec"), {})
    printed = capsys.readouterr().out.strip()
    expected = re.search(r"print\(reply.*# (.*)", example).group(1)  # the output the README shows
    assert printed == expected
