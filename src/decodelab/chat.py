"""Chat prompts: messages rendered through the model's own template, and the tokens that end a turn.

The template is rendered the way transformers' `apply_chat_template` renders it (a sandboxed Jinja
environment with `trim_blocks`/`lstrip_blocks`, `raise_exception`, a non-escaping `tojson`), without
importing transformers. A test checks both give the same text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any

from decodelab.errors import BadInput, DecodelabError, Unsupported
from decodelab.tokenizer import Tokenizer

# Tokens that close an assistant turn in common chat templates. HyperCLOVAX-SEED ends a turn with
# <|endofturn|> or <|stop|> but its config names neither as eos, so they are found here instead.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|endofturn|>", "<|stop|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>")

Message = dict[str, Any]  # role, content; an assistant's tool_calls, a tool's tool_call_id, a name


def build_messages(prompt: str | list[Message], system: str | None = None) -> list[Message]:
    """A user prompt (optionally after a system message) as chat messages; message lists pass through."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    for message in prompt:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise BadInput(f"a chat message needs 'role' and 'content', got {str(message)[:80]}")
        content_ok = isinstance(message["content"], str) or (message["content"] is None and message.get("tool_calls"))
        if not isinstance(message["role"], str) or not content_ok:
            raise BadInput(
                "a chat message's role and content must be text (content may be None beside tool_calls), "
                f"got {str(message)[:80]}"
            )
    messages = [dict(message) for message in prompt]
    if system is not None:
        messages.insert(0, {"role": "system", "content": system})
    if not messages:
        raise BadInput("no chat messages given: pass a prompt or at least one {'role', 'content'} message")
    return messages


def render_chat(
    tokenizer: Tokenizer,
    messages: list[Message],
    add_generation_prompt: bool = True,
    tools: list[dict[str, Any]] | None = None,
) -> str:
    """The prompt text the model sees for `messages`, ending with the assistant's turn opener. `tools` (OpenAI's
    `{"type": "function", "function": {...}}` dicts) reach the template as `tools`, as transformers passes them;
    a template that never reads them shows nothing of them (see `template_reads_tools`)."""
    if not tokenizer.chat_template:
        raise Unsupported(
            "this model has no chat template: give it plain text (no --chat; /v1/completions on the server)"
        )
    from jinja2 import TemplateError

    template = _compile(tokenizer.chat_template)
    _check_tool_calls_known(messages, tokenizer.chat_template)
    try:
        extra = {"tools": tools} if tools else {}
        text = template.render(
            messages=messages, add_generation_prompt=add_generation_prompt, **extra, **tokenizer.named_tokens
        )
    except TemplateError as exc:
        raise BadInput(f"the model's chat template rejected these messages: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a template's own code on unexpected input
        raise BadInput(
            f"the model's chat template could not render these messages ({exc}): check their fields"
        ) from None
    _check_tool_turns_shown(messages, text)
    return text


def template_reads_tools(tokenizer: Tokenizer) -> bool:
    """Whether the model's chat template shows the tools it is given (it reads a `tools` variable)."""
    return "tools" in (tokenizer.chat_template or "")


def _check_tool_calls_known(messages: list[Message], template: str) -> None:
    """Tool calls need a template that reads `tool_calls` (SmolLM2's does not, and fails on their None content)."""
    for index, message in enumerate(messages):
        if message.get("tool_calls") and "tool_calls" not in template:
            names = [_called_name(call) for call in message["tool_calls"]]
            raise BadInput(
                f"this model's chat template does not show tool calls (it never reads tool_calls): messages[{index}] "
                f"calls {', '.join(map(repr, names))}. Use a model whose template supports tools, or write the "
                "call into the message's content as text"
            )


def _called_name(call: object) -> str:
    """The function a tool call names: OpenAI's {"function": {"name": ...}} or a flat {"name": ...}."""
    if not isinstance(call, dict):
        return ""
    function = call.get("function")
    name = function.get("name") if isinstance(function, dict) else call.get("name")
    return name if isinstance(name, str) else ""


def _check_tool_turns_shown(messages: list[Message], text: str) -> None:
    """A template that cannot show tool calls or results drops them without a word (SmolLM2's prints an empty
    assistant turn): refuse the messages instead. A call is shown when its function's name is in the prompt,
    a tool result when its content is."""
    for index, message in enumerate(messages):
        for call in message.get("tool_calls") or ():
            name = _called_name(call)
            if not name or name not in text:
                raise BadInput(
                    f"this model's chat template does not show tool calls: messages[{index}] calls {name!r} and "
                    "the prompt would not contain it. Use a model whose template supports tools, or write the "
                    "call into the message's content as text"
                )
        content = message.get("content")
        if message.get("role") == "tool" and isinstance(content, str) and content.strip() not in text:
            raise BadInput(
                f"this model's chat template does not show tool results: messages[{index}] would vanish from the "
                "prompt. Use a model whose template supports tools, or send the result as a user message"
            )


def detect_stop_ids(tokenizer: Tokenizer, eos_ids: Iterable[int], stop_strings: Iterable[str] = ()) -> frozenset[int]:
    """Every token id that ends generation.

    The union of: eos ids from the model/generation config, the tokenizer's eos token, the end-of-turn
    markers this vocabulary has as single tokens (when its chat template uses them, or `<|endoftext|>`),
    and user stop strings that are exactly one special token.
    """
    stops = set(eos_ids)
    eos_token = tokenizer.named_tokens.get("eos_token")
    template = tokenizer.chat_template or ""
    candidates = [eos_token] if eos_token else []
    candidates += [marker for marker in END_OF_TURN_MARKERS if marker in template or marker == "<|endoftext|>"]
    for text in candidates:
        token_id = tokenizer.token_to_id(text)
        if token_id is not None and tokenizer.encode(text, False) == [token_id]:
            stops.add(token_id)
    for text in stop_strings:  # plain words stay stop *strings*: " the" must stop as well as "the"
        token_id = tokenizer.token_to_id(text) if text else None
        if token_id is not None and tokenizer.is_special(token_id):
            stops.add(token_id)
    return frozenset(stops)


@lru_cache(maxsize=8)
def _compile(source: str):
    from jinja2 import TemplateError, nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` (marks assistant text for training) renders its body."""

        tags = {"generation"}  # noqa: RUF012 (jinja2 declares it a plain class attribute)

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.Scope(body).set_lineno(lineno)

    def raise_exception(message: str):
        raise TemplateError(message)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, loopcontrols]
    )
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return environment.from_string(source)
    except TemplateError as exc:
        raise DecodelabError(f"the model's chat template does not compile: {exc}") from None
