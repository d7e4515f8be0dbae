"""Tool calls on /v1/chat/completions: what `tools` and `tool_choice` make the model write, and how its text
becomes OpenAI's `message.tool_calls` (whole, or streamed as tool-call deltas).

Two ways, as vLLM has them:

- **Forced** (`tool_choice: "required"` or a named function): the output is constrained by a JSON schema to
  a list of calls, `[{"name": "get_weather", "arguments": {...}}, ...]`, each call's arguments valid under its
  function's `parameters` (one call with a named function, or with `parallel_tool_calls: false`). Any model
  can do it, whatever its template: the grammar writes the frame, the model fills in the values.
- **Auto** (`tool_choice: "auto"`, the default with tools): the model writes freely, and calls in the form its
  chat template teaches, `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen's and Hermes'
  templates; vLLM's `hermes` parser), are taken out of the text. A template that does not show tools, or
  writes calls in another form, cannot be parsed: that is a 400 saying to use "required" or a named function.

A template that does not read `tools` (SmolLM2's) is not shown them by decodelab either: the forced output is
still a valid call, and the prompt stays exactly what the template renders.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from decodelab.chat import template_reads_tools
from decodelab.constraints import Constraint
from decodelab.server.errors import APIError

if TYPE_CHECKING:
    from decodelab.server.openai_schemas import ChatRequest, FunctionDefinition
    from decodelab.tokenizer import Tokenizer

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"  # the auto form: what Hermes-style templates teach
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class ToolPlan:
    """How one request's tools are answered: `forced` (constrained to a list of calls) or auto (parsed)."""

    functions: tuple[FunctionDefinition, ...]  # the functions the output may call
    template_tools: tuple[dict, ...]  # every tool offered, as the chat template takes them
    forced: bool
    single: bool  # at most one call (a named function, or parallel_tool_calls false)

    def constraint(self) -> Constraint | None:
        """Forced: the output is a JSON list of calls, each `{"name": <a function>, "arguments": <its schema>}`."""
        if not self.forced:
            return None
        calls = [
            {
                "type": "object",
                "properties": {"name": {"const": function.name}, "arguments": arguments_schema(function)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for function in self.functions
        ]
        schema: dict[str, Any] = {"type": "array", "items": {"anyOf": calls}, "minItems": 1}
        if self.single:
            schema["maxItems"] = 1
        return Constraint.json_schema(schema)

    def parser(self) -> CallParser:
        return ForcedCalls() if self.forced else TaggedCalls()


def arguments_schema(function: FunctionDefinition) -> dict:
    """A function's `parameters`, which must describe an object (OpenAI's rule); none: no arguments, `{}`."""
    parameters = function.parameters
    if not parameters:
        return NO_ARGUMENTS
    if parameters.get("type", "object") != "object":
        raise APIError(
            400,
            f"function {function.name!r}: parameters must be the JSON schema of an object (its arguments), got type "
            f"{parameters.get('type')!r}",
            param="tools",
        )
    return {"type": "object", **parameters}


def plan_tools(body: ChatRequest, tokenizer: Tokenizer) -> ToolPlan | None:
    """The request's tool plan, or None when no call may be made; a choice that cannot be honoured is a 400."""
    choice = body.tool_choice
    if not body.tools:
        if choice not in (None, "none", "auto"):
            raise APIError(
                400,
                "tool_choice asks for a tool call and no tools are given: send tools, or leave tool_choice out",
                param="tool_choice",
            )
        return None
    if choice == "none":
        return None
    names = [tool.function.name for tool in body.tools]
    if len(set(names)) < len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise APIError(400, f"tools name the function {twice!r} twice: give each function once", param="tools")
    template_tools = tuple(tool.for_template() for tool in body.tools)
    functions = tuple(tool.function for tool in body.tools)
    if choice == "required":
        return ToolPlan(functions, template_tools, forced=True, single=body.parallel_tool_calls is False)
    if choice is not None and choice != "auto":  # a named function
        name = choice.function.name
        if name not in names:
            raise APIError(
                400,
                f"tool_choice names the function {name!r}, which is not among tools ({', '.join(names)})",
                param="tool_choice",
            )
        return ToolPlan(tuple(f for f in functions if f.name == name), template_tools, forced=True, single=True)
    template = tokenizer.chat_template or ""
    if not (template_reads_tools(tokenizer) and CALL_OPEN in template):
        raise APIError(
            400,
            f'tool_choice "auto" needs a chat template that shows tools and writes calls as {CALL_OPEN}...{CALL_CLOSE} '
            'so they can be parsed, and this model\'s does not: send tool_choice "required" (or name a function) '
            "to have the output constrained to a call",
            param="tool_choice",
        )
    return ToolPlan(functions, template_tools, forced=False, single=body.parallel_tool_calls is False)


# --- from text to calls -------------------------------------------------------------------------------------------


@dataclass
class CallParser:
    """Reads a choice's text as it grows (`feed`, then `finish`) and says it as OpenAI's chat deltas: content,
    a call's start (its id and name) and its arguments. `content` and `calls` hold the whole answer."""

    content: str = ""
    calls: list[dict] = field(default_factory=list)  # OpenAI's tool_calls entries, arguments as text

    def feed(self, text: str) -> list[dict]:
        raise NotImplementedError

    def finish(self) -> list[dict]:
        """The deltas of whatever the text still held back."""
        return []

    def message_content(self) -> str | None:
        """The message's content: None when the reply is calls and nothing else worth saying."""
        if self.calls and not self.content.strip():
            return None
        return self.content

    def _content(self, text: str) -> list[dict]:
        if not text or (self.calls and not text.strip()):  # the line breaks between calls are not content
            return []
        self.content += text
        return [{"content": text}]

    def _start_call(self, name: str) -> dict:
        call = {
            "id": "call_" + secrets.token_urlsafe(12),
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        self.calls.append(call)
        return {"tool_calls": [{"index": len(self.calls) - 1, **json.loads(json.dumps(call))}]}

    def _arguments(self, text: str) -> list[dict]:
        if not text:
            return []
        self.calls[-1]["function"]["arguments"] += text
        return [{"tool_calls": [{"index": len(self.calls) - 1, "function": {"arguments": text}}]}]


@dataclass
class ForcedCalls(CallParser):
    """The forced form, compact JSON in the schema's order: `[{"name":"f","arguments":{...}},...]`. A scan of
    the JSON's nesting (strings and escapes aside) finds each call's name and streams its arguments as they
    are written."""

    _depth: int = 0  # open brackets: 1 in the list, 2 in a call, 3 and more in its arguments
    _in_string: bool = False
    _escaped: bool = False
    _string: str = ""  # the string being read at call level (a key or the name)
    _key: str | None = None  # the call-level key whose value comes next
    _in_arguments: bool = False

    def feed(self, text: str) -> list[dict]:
        deltas: list[dict] = []
        arguments = ""
        for char in text:
            if self._in_arguments:
                arguments += char
                self._track(char)
                if self._depth == 2:  # the arguments' object closed
                    self._in_arguments = False
                continue
            if self._in_string:
                self._string += char
                if self._track(char) and self._depth == 2:  # a call-level string ended
                    value = json.loads(self._string)
                    if self._key is None:
                        self._key = value
                    else:
                        if self._key == "name":
                            deltas += self._arguments(arguments)
                            arguments = ""
                            deltas.append(self._start_call(value))
                        self._key = None
                continue
            if char == '"':
                self._in_string, self._string = True, char
            elif char in "{[":
                self._depth += 1
                if self._depth == 3 and self._key == "arguments":
                    self._in_arguments, self._key, arguments = True, None, arguments + char
            elif char in "}]":
                self._depth -= 1
        return deltas + self._arguments(arguments)

    def _track(self, char: str) -> bool:
        """Follow strings and nesting through one character; True when it ended a string."""
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif char == "\\":
                self._escaped = True
            elif char == '"':
                self._in_string = False
                return True
        elif char == '"':
            self._in_string = True
        elif char in "{[":
            self._depth += 1
        elif char in "}]":
            self._depth -= 1
        return False


@dataclass
class TaggedCalls(CallParser):
    """The auto form: content, with calls as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`. Text
    that may be the start of a tag is held back until it is known; a block that is not a call stays content."""

    _pending: str = ""
    _in_call: bool = False

    def feed(self, text: str) -> list[dict]:
        self._pending += text
        deltas: list[dict] = []
        while True:
            if not self._in_call:
                at = self._pending.find(CALL_OPEN)
                if at < 0:
                    keep = _partial_tag(self._pending)
                    deltas += self._content(self._pending[: len(self._pending) - keep])
                    self._pending = self._pending[len(self._pending) - keep :]
                    return deltas
                deltas += self._content(self._pending[:at])
                self._pending, self._in_call = self._pending[at + len(CALL_OPEN) :], True
            at = self._pending.find(CALL_CLOSE)
            if at < 0:
                return deltas
            deltas += self._block(self._pending[:at])
            self._pending, self._in_call = self._pending[at + len(CALL_CLOSE) :], False

    def finish(self) -> list[dict]:
        rest, self._pending = (CALL_OPEN if self._in_call else "") + self._pending, ""
        return self._content(rest)

    def _block(self, body: str) -> list[dict]:
        try:
            call = json.loads(body)
        except ValueError:
            call = None
        arguments = call.get("arguments", call.get("parameters")) if isinstance(call, dict) else None
        if not (isinstance(call, dict) and isinstance(call.get("name"), str) and isinstance(arguments, (dict, str))):
            return self._content(CALL_OPEN + body + CALL_CLOSE)  # not a call: the model's text, as written
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        return [self._start_call(call["name"]), *self._arguments(text)]


def _partial_tag(text: str) -> int:
    """How many characters at the end of `text` could begin CALL_OPEN."""
    for length in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-length:]):
            return length
    return 0
