"""Request bodies of the OpenAI-compatible routes, validated field by field (bad values are 400s that say
which field and why). Every sampler setting is a request field, made from the stage's own declaration: OpenAI's
(temperature, top_p, presence_penalty, frequency_penalty, logit_bias) and decodelab's extra ones (top_k, min_p,
...; the `openai` client sends those with `extra_body={...}`).

A field OpenAI takes either works, is accepted and ignored because it cannot change the output (`IgnoredFields`,
listed in the README), or is refused with a 400 that names it: never silently dropped.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from decodelab.constraints import Constraint, constraint_from_keywords
from decodelab.errors import BadInput
from decodelab.generation_config import from_json
from decodelab.samplers import all_settings
from decodelab.server.setting_fields import setting_fields_model

MAX_STOP_STRINGS = 64  # lm-eval adds the EOS text to a task's own list; vLLM has no cap at all
MAX_STOP_CHARS = 256  # each: finding a stop string costs up to its length squared per step
MAX_PROMPTS = 64  # prompts in one /v1/completions request (lm-eval's --batch_size, LangChain's .batch)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    include_usage: bool = False  # a last chunk with the usage of the whole request
    continuous_usage_stats: bool = False  # vLLM's: the usage so far in every chunk
    include_obfuscation: bool = True  # OpenAI pads chunks against length side channels; decodelab adds nothing


class IgnoredFields(BaseModel):
    """Fields of OpenAI's requests that cannot change what decodelab answers: accepted and ignored."""

    user: str | None = None  # an id of the caller's end user, for the caller's own logs
    store: bool | None = None  # OpenAI keeps the completion for its dashboard; decodelab keeps nothing
    metadata: dict[str, str] | None = None  # tags for stored completions
    service_tier: str | None = None  # OpenAI's processing tier ("auto", "default", "flex", ...)
    prompt_cache_key: str | None = None  # OpenAI's cache routing hint
    safety_identifier: str | None = None  # an id of the caller's end user, for OpenAI's abuse checks


def ignored_field_names() -> list[str]:
    """The names of every field accepted and ignored, on either route (the README lists them)."""
    return list(IgnoredFields.model_fields)


NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # OpenAI's rule for a schema's or a function's name


class JSONSchemaFormat(BaseModel):
    """`response_format.json_schema`: OpenAI's named schema. `strict` is always honoured: the output is
    constrained to the schema whatever it says."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")  # {} allows any JSON value
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    def constraint(self) -> Constraint | None:
        if self.type == "json_object":
            return Constraint.json_object()
        if self.type == "json_schema":
            if self.json_schema is None:
                raise BadInput('a json_schema response_format needs "json_schema": {"name": ..., "schema": {...}}')
            return Constraint.json_schema(self.json_schema.schema_)
        return None


class StructuredOutputs(BaseModel):
    """vLLM's `structured_outputs` (sent with `extra_body`): one of a JSON schema, any JSON object, a regex, a
    choice among strings, or a grammar (Lark or GBNF)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    json_object: bool | None = None
    regex: str | None = None
    choice: list[str] | None = None
    grammar: str | None = None

    def constraint(self) -> Constraint | None:
        keywords = {"json_schema": self.json_, "json_object": self.json_object, "regex": self.regex}
        return constraint_from_keywords({**keywords, "choice": self.choice, "grammar": self.grammar})


class SamplingFields(IgnoredFields):
    """The fields every generating route shares; the sampler settings are added below, from the registry."""

    # strict: JSON types as sent (`true` is not the token id 1, "0.7" is not a number), as OpenAI takes them
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None  # taken with stream=false too, where it changes nothing
    stop: str | list[str] | None = None
    seed: int | None = None
    response_format: ResponseFormat | None = None  # JSON (any, or under a schema) constrains the output
    structured_outputs: StructuredOutputs | None = None  # vLLM's: also a regex, a choice or a grammar
    return_tokens_as_token_ids: bool = False  # vLLM's: logprobs name tokens "token_id:123" (lossless)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > MAX_STOP_STRINGS:
            raise ValueError(f"give at most {MAX_STOP_STRINGS} stop strings, got {len(stops)}")
        for stop in stops:
            if not stop or len(stop) > MAX_STOP_CHARS:
                raise ValueError(f"each stop string must have 1 to {MAX_STOP_CHARS} characters, got {stop[:40]!r}")
        return stops

    def sampler_settings(self) -> dict[str, Any]:
        """The sampler settings this request sets, as GenerationConfig fields."""
        return {
            declared.name: from_json(declared.name, value)
            for declared in all_settings()
            if (value := getattr(self, declared.name)) is not None
        }


if TYPE_CHECKING:
    SamplingRequest = SamplingFields
else:
    SamplingRequest = setting_fields_model("SamplingRequest", SamplingFields)


class CompletionRequest(SamplingRequest):
    prompt: str | list[int] | list[str] | list[list[int]]  # several prompts: choices are prompt-major
    max_tokens: int | None = Field(None, ge=0)  # 0: score the prompt only (with echo)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False  # the prompt before each choice's text, its tokens' logprobs before the new ones'
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per list entry when the request sends several."""
        prompt = self.prompt
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
            return list(prompt)
        return [prompt]  # type: ignore[list-item]  # str | list[int]


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str


class CalledFunction(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(min_length=1)
    arguments: str  # a JSON object, as text (OpenAI's form)

    @field_validator("arguments")
    @classmethod
    def _json_object(cls, value: str) -> str:
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValueError(f"a tool call's arguments must be a JSON object written as text, got {value[:60]!r}")
        return value


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    id: str
    type: Literal["function"] = "function"
    function: CalledFunction

    def for_template(self) -> dict:
        """As chat templates (and transformers' `apply_chat_template`) take it: arguments as a dict."""
        function = {"name": self.function.name, "arguments": json.loads(self.function.arguments)}
        return {"id": self.id, "type": self.type, "function": function}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None  # an assistant's calls, shown to the model by its template
    tool_call_id: str | None = None  # a tool message: which call it answers
    refusal: str | None = None  # in a reply sent back as history; not part of the conversation's text
    annotations: list[Any] | None = None  # likewise (citations of OpenAI's web search)
    function_call: None = None  # the deprecated single call: use tool_calls
    audio: None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def for_template(self) -> dict[str, Any]:
        """The message as the model's chat template takes it: `developer` is OpenAI's new name for `system`."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role}
        message["content"] = None if self.content is None and self.tool_calls else self.text()
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.for_template() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


def messages_not_empty(value: Any) -> Any:
    """A `messages` field's check before its items are read: an empty list says what to send."""
    if isinstance(value, list) and not value:
        raise ValueError("send at least one {'role', 'content'} message")
    return value


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema of the arguments object; None: no arguments
    strict: bool | None = None  # always honoured: the arguments are constrained to `parameters`


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: FunctionDefinition

    def for_template(self) -> dict:
        """As chat templates (and transformers' `apply_chat_template`) take a tool."""
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name": "get_weather"}}`: call exactly this function."""

    model_config = ConfigDict(extra="forbid", strict=True)

    type: Literal["function"]
    function: FunctionName


MAX_TOOLS = 128  # OpenAI's limit on `tools`


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None  # None: "auto" with tools
    parallel_tool_calls: bool | None = None  # False: at most one call per reply (None, True: several may come)

    @field_validator("messages")
    @classmethod
    def _tool_messages_answer_a_call(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        for index, message in enumerate(messages):
            if message.role == "tool" and not message.tool_call_id:
                raise ValueError(f"messages[{index}] is a tool message: give its tool_call_id (the call it answers)")
            if message.tool_calls and message.role != "assistant":
                raise ValueError(f"messages[{index}] has tool_calls: only an assistant message makes calls")
        return messages

    _not_empty = field_validator("messages", mode="before")(messages_not_empty)
