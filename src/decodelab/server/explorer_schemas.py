"""Request bodies of the explorer routes (`/api/...`), and the GenerationConfig a JSON `config` names.

A constraint is one field of that config, in one shape for every route (the shape `config` comes back in):

    "constraint": {"kind": "json_schema", "source": {...}}        the schema, or its JSON text
                  {"kind": "json_object"}                         any JSON object (no source)
                  {"kind": "regex", "source": "[0-9]+"}           the whole output matches (Rust regex syntax)
                  {"kind": "choice", "source": [" yes", " no"]}   exactly one of these (or that list as JSON text)
                  {"kind": "grammar", "source": "start: ..."}     llguidance's Lark, or GBNF (`root ::= ...`)
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from decodelab.constraints import KEYWORDS, KINDS, Constraint, one_line
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig, from_json
from decodelab.model import make_config
from decodelab.server.errors import APIError
from decodelab.server.limits import MAX_CONSTRAINT_CHARS

TOP_FOR_PAGE = 50  # labelled candidates per distribution; sampler stages never reorder the raw ranking
MAX_GENERATE_STEPS = 512
MAX_TRACE_TOKENS = 65_536  # a trace's prompt and tokens, each, as parsed; the model's context bounds them further


class Strict(BaseModel):
    """Unknown fields are refused, and values keep their JSON types (`true` is not the token id 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Message(Strict):
    role: str
    content: str


class PromptFields(Strict):
    """A prompt as text or chat messages, the part every prompt-taking route shares."""

    prompt: str | None = None
    messages: list[Message] | None = None  # chat messages instead of `prompt`
    chat: bool = False  # render `prompt` through the chat template

    def prompt_input(self) -> Any:
        if self.messages is not None:
            if not self.messages:
                raise BadInput("messages is empty: send at least one {'role', 'content'} message")
            return [message.model_dump() for message in self.messages]
        if self.prompt is None or self.prompt == "" or self.prompt == []:
            raise BadInput("prompt is empty: type some text for the model to continue")
        return self.prompt

    def is_chat(self) -> bool:
        return self.chat or self.messages is not None


class PromptRequest(PromptFields):
    prompt: str | list[int] | None = None  # type: ignore[assignment]  # plain text, or ids here
    system: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)  # GenerationConfig fields


class NextRequest(PromptRequest):
    top: int = Field(TOP_FOR_PAGE, ge=1, le=1000)


class TraceRequest(PromptRequest):
    n: int = Field(1, ge=1, le=16)


class StepRequest(Strict):
    greedy: bool = False
    config: dict[str, Any] | None = None  # replaces the session's config from this step on


class AppendRequest(Strict):
    token_id: int | None = None
    text: str | None = None  # a text that is exactly one token
    # as a step's: the token is appended (and checked against a constraint) under this config from now on
    config: dict[str, Any] | None = None
    greedy: bool | None = None  # None: as the session is


class UndoRequest(Strict):
    count: int = Field(1, ge=1)  # at most the session's steps: undo to step k takes back len(steps) - k


class GenerateRequest(StepRequest):
    count: int = Field(16, ge=1, le=MAX_GENERATE_STEPS)
    stream: bool = False  # server-sent events, one per step as it is made (see session_stream)


class SavedToken(Strict):
    """A token as `Session.save()` writes it: its id, its draw number (null: forced) and, when it was made under
    another config than the trace's, that config (GenerationConfig fields; a step's `settings` will do)."""

    id: int = Field(ge=0)
    draw: Annotated[int, Field(ge=0, lt=2**62)] | None
    config: dict[str, Any] | None = None


class SavedTrace(Strict):
    """A session as `Session.save()` writes it (GET /api/sessions/ID/trace's `trace`)."""

    prompt_ids: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=MAX_TRACE_TOKENS)
    config: dict[str, Any] = Field(default_factory=dict)
    seed: int = Field(ge=0, lt=2**63)
    tokens: list[SavedToken] = Field(default_factory=list, max_length=MAX_TRACE_TOKENS)


class SessionRequest(PromptRequest):
    """A session from a prompt, or from a saved `trace` replayed token for token (then no prompt, no config)."""

    trace: SavedTrace | None = None
    model: str | None = None  # the model the trace was made with (the trace file says): must be this server's


class RedoRequest(Strict):
    tokens: list[SavedToken] = Field(min_length=1, max_length=MAX_GENERATE_STEPS)
    config: dict[str, Any] | None = None  # what tokens without their own config were made under; default: the session's


class ScoreRequest(Strict):
    text: str
    prompt: str | None = None


class PlainPrompt(PromptFields):
    prompt: str | list[int] | None = None  # type: ignore[assignment]  # text, or a position's token ids
    max_new_tokens: int = Field(32, ge=1, le=MAX_GENERATE_STEPS)


class BeamRequest(PlainPrompt):
    num_beams: int = Field(4, ge=2)  # at most the server's max_beams
    length_penalty: float = 1.0


class CompareRequest(PlainPrompt):
    strategies: str = "greedy; beam:4; temperature:0.8,top_p:0.9"  # at most max_strategies, beams <= max_beams
    seed: int = Field(0, ge=0, lt=2**63)


def make_generation_config(values: dict[str, Any] | None, base: GenerationConfig | None = None) -> GenerationConfig:
    """A GenerationConfig from JSON fields; unknown names and bad values are one BadInput each."""
    values = dict(values or {})
    for keyword in KEYWORDS:  # the Python API's keywords (regex=...): over HTTP, `constraint` is the one field
        if keyword in values:
            raise APIError(
                400,
                f'config.{keyword}: send a constraint as config.constraint = {{"kind": "{keyword}", "source": ...}}',
                param=f"config.{keyword}",
            )
    if values.get("constraint") is not None:
        values["constraint"] = request_constraint(values["constraint"])
    return make_config(base, {name: from_json(name, value) for name, value in values.items()})


CONSTRAINT_FIELD = "config.constraint"
CONSTRAINT_EXAMPLE = '{"kind": "regex", "source": "[0-9]+"}'


def request_constraint(value: Any) -> Constraint:
    """`config.constraint` as a request sends it (see the module's docstring) -> a Constraint, checked once
    here; anything wrong is a 400 naming config.constraint."""
    try:
        return _constraint(value)
    except BadInput as error:
        raise _refusal(str(error), value.get("kind") if isinstance(value, dict) else None) from None
    except RecursionError:
        raise _refusal("the source nests too deeply: send a flatter schema") from None


def _constraint(value: Any) -> Constraint:
    if not isinstance(value, dict) or "kind" not in value or not set(value) <= {"kind", "source"}:
        raise BadInput(f"must be {{'kind', 'source'}}, e.g. {CONSTRAINT_EXAMPLE}, got {_quote(value)}")
    kind, source = value["kind"], value.get("source")
    if kind not in KINDS:
        raise BadInput(f"kind must be one of {', '.join(KINDS)}, got {_quote(kind)}")
    if kind == "json_object":  # any object; the source a state echoes back is the library's own
        if source is not None and source != Constraint.json_object().source:
            raise BadInput(
                "a json_object constraint takes no source (any JSON object): leave it out, or use json_schema"
            )
        return Constraint.json_object()
    if source is None:
        raise BadInput(f"a {kind} constraint needs its source, e.g. {CONSTRAINT_EXAMPLE}")
    size = len(source) if isinstance(source, str) else len(json.dumps(source, ensure_ascii=False))
    if size > MAX_CONSTRAINT_CHARS:
        raise BadInput(
            f"the {kind} source is {size:,} characters and this server takes at most {MAX_CONSTRAINT_CHARS:,} "
            "per constraint: send a shorter one"
        )
    if kind in ("regex", "grammar") and not isinstance(source, str):
        raise BadInput(f"a {kind} constraint's source is text, got {_quote(source)}")
    if kind == "choice" and isinstance(source, str):
        source = _choices(source)
    return getattr(Constraint, kind)(source)  # a source llguidance refuses is one BadInput (constraints.py)


def _choices(text: str) -> Any:
    """A choice source sent as text: the JSON list a state echoes back."""
    try:
        return json.loads(text)
    except ValueError:
        raise BadInput(
            f'a choice constraint\'s source is a list of strings, e.g. [" yes", " no"], got {_quote(text)}'
        ) from None


def _refusal(message: str, kind: str | None = None) -> APIError:
    """The library's one-line message (`constraints.one_line`) under config.constraint. Only a grammar's own
    text has the line(column) llguidance points at; other kinds are compiled to a grammar the user never sees."""
    text = one_line(message)
    if kind != "grammar":
        text = re.sub(r"\bat \d+\(\d+\): ", "", text)
    if "does not compile" in text:
        text += ": correct the source"
    return APIError(400, f"{CONSTRAINT_FIELD}: {text}", param=CONSTRAINT_FIELD, code="invalid_constraint")


def _quote(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:80]
