"""Request bodies of the explorer routes (`/api/...`), and the GenerationConfig a JSON `config` names."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig, from_json
from decodelab.model import make_config

TOP_FOR_PAGE = 50  # labelled candidates per distribution; sampler stages never reorder the raw ranking
MAX_GENERATE_STEPS = 512


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


class UndoRequest(Strict):
    count: int = Field(1, ge=1)


class GenerateRequest(StepRequest):
    count: int = Field(16, ge=1, le=MAX_GENERATE_STEPS)


class ScoreRequest(Strict):
    text: str
    prompt: str | None = None


class PlainPrompt(PromptFields):
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
    return make_config(base, {name: from_json(name, value) for name, value in values.items()})
