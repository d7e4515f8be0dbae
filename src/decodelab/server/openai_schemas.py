"""Request bodies of the OpenAI-compatible routes, validated field by field (bad values are 400s that say
which field and why). Every sampler setting is a request field, made from the stage's own declaration: OpenAI's
(temperature, top_p, presence_penalty, frequency_penalty, logit_bias) and decodelab's extra ones (top_k, min_p,
...; the `openai` client sends those with `extra_body={...}`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from decodelab.generation_config import from_json
from decodelab.samplers import all_settings
from decodelab.server.setting_fields import setting_fields_model


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True)

    include_usage: bool = False


class SamplingFields(BaseModel):
    """The fields every generating route shares; the sampler settings are added below, from the registry."""

    # strict: JSON types as sent (`true` is not the token id 1, "0.7" is not a number), as OpenAI takes them
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None  # accepted and ignored, as an identifier for the caller's own logs

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not stop for stop in stops):
            raise ValueError("give at most 4 non-empty stop strings")
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
    prompt: str | list[int] | list[str] | list[list[int]]
    max_tokens: int | None = Field(None, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(strict=True)

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class ChatRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @field_validator("messages", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("send at least one {'role', 'content'} message")
        return value
