"""vLLM's tokenizer routes, at the server root where vLLM serves them, so a client of vLLM's can tokenize with
the served model's own tokenizer (lm-evaluation-harness's `tokenizer_backend=remote` reads exactly these):

    POST /tokenize         {"prompt": text} or {"messages": [...]} -> {"count", "max_model_len", "tokens",
                           "token_strs"}; a chat is rendered through the model's template first
    POST /detokenize       {"tokens": [ids]} -> {"prompt": text}, decoded exactly (special tokens kept)
    GET  /tokenizer_info   the special tokens' text, the chat template's source, the context length

The shapes are vLLM's (`vllm/entrypoints/serve/tokenize/protocol.py`, `.../serving.py`). vLLM takes its two
tokenize forms as a union of two models; here they are one body (a union's errors would name the member
models instead of the field), and a field of the chat form sent beside `prompt` is refused. The chat form's
fields that decodelab cannot honour are refused when set (`REFUSED_CHAT_FIELDS`), never ignored. Tokenizing
runs on the model thread, as /api/tokenize does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from decodelab.chat import build_messages, render_chat
from decodelab.server.errors import ERROR_RESPONSES, APIError
from decodelab.server.openai_api import check_model
from decodelab.server.openai_schemas import MAX_TOOLS, ChatMessage, FunctionTool, messages_not_empty

if TYPE_CHECKING:
    from decodelab.model import LM
    from decodelab.server.app import ServerState

router = APIRouter(responses=ERROR_RESPONSES)

# The chat form's fields decodelab cannot honour, refused when set (a false, null or empty value is taken).
REFUSED_CHAT_FIELDS = {
    "continue_final_message": "send add_generation_prompt=false and cut the text after the last message yourself",
    "chat_template": "decodelab renders the model's own template (GET /tokenizer_info shows it): leave it out",
    "chat_template_kwargs": "the model's template is rendered with its special tokens only: leave it out",
    "media_io_kwargs": "decodelab's models read text only: leave it out",
    "mm_processor_kwargs": "decodelab's models read text only: leave it out",
}


class Strict(BaseModel):
    """Unknown fields are refused, and values keep their JSON types (`true` is not the token id 1)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class CompletionForm(Strict):
    """vLLM's TokenizeCompletionRequest."""

    model: str | None = None  # the served model's name, when given
    prompt: str | None = None  # the text to tokenize ("" is no tokens)
    add_special_tokens: bool | None = None  # the tokenizer's own specials (BOS); default true, false for messages
    return_token_strs: bool | None = False  # also each token's vocabulary entry ("Ġworld")


class ChatForm(Strict):
    """What vLLM's TokenizeChatRequest adds: a chat rendered through the model's template, then tokenized."""

    messages: list[ChatMessage] | None = Field(None, min_length=1)
    add_generation_prompt: bool = True  # end with the opener of the assistant's turn
    continue_final_message: bool = False
    chat_template: str | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    media_io_kwargs: dict[str, dict[str, Any]] | None = None
    mm_processor_kwargs: dict[str, Any] | None = None
    tools: list[FunctionTool] | None = Field(None, max_length=MAX_TOOLS)  # shown by the template, as chat shows them

    _not_empty = field_validator("messages", mode="before")(messages_not_empty)


CHAT_ONLY_FIELDS = tuple(name for name in ChatForm.model_fields if name != "messages")


class TokenizeRequest(CompletionForm, ChatForm):
    """Either form: `prompt` (text) or `messages` (a chat), never both."""

    def special_tokens(self) -> bool:
        if self.add_special_tokens is not None:
            return self.add_special_tokens
        return self.messages is None  # a chat template writes its own special tokens


class TokenizeResponse(BaseModel):
    count: int  # len(tokens)
    max_model_len: int  # the model's context length
    tokens: list[int]
    token_strs: list[str] | None  # with return_token_strs: each token's vocabulary entry


class DetokenizeRequest(Strict):
    model: str | None = None
    tokens: list[int]  # ids in [0, vocabulary size)


class DetokenizeResponse(BaseModel):
    prompt: str


class TokenizerInfoResponse(BaseModel):
    """vLLM answers its tokenizer's `tokenizer_config.json`; these are the fields decodelab knows."""

    model_config = ConfigDict(extra="forbid")

    tokenizer_class: str  # the class that tokenizes, as vLLM names it
    bos_token: str | None  # each special token's text, when the tokenizer's config names one
    eos_token: str | None
    pad_token: str | None
    unk_token: str | None
    chat_template: str | None  # the Jinja source, or null for a model without one
    model_max_length: int  # the model's context length
    added_tokens_decoder: dict[str, str]  # id -> text of each added token, as vLLM flattens transformers' map


def _app(request: Request) -> ServerState:
    return request.app.state.decodelab


def _check_form(body: TokenizeRequest) -> None:
    if body.prompt is not None and body.messages is not None:
        raise APIError(400, "send either prompt (text) or messages (a chat), not both", param="messages")
    if body.prompt is None and body.messages is None:
        raise APIError(
            400,
            "send prompt (the text to tokenize) or messages (a chat to render through the model's template)",
            param="prompt",
        )
    if body.prompt is not None:
        for name in CHAT_ONLY_FIELDS:
            if name in body.model_fields_set:
                raise APIError(400, f"{name} applies to messages only: leave it out with a prompt", param=name)
    for name, fix in REFUSED_CHAT_FIELDS.items():
        if getattr(body, name):
            raise APIError(400, f"{name} is not supported by decodelab: {fix}", param=name)


def _tokenize(lm: LM, body: TokenizeRequest) -> TokenizeResponse:
    text = body.prompt
    if body.messages is not None:
        messages = build_messages([message.for_template() for message in body.messages])
        tools = [tool.for_template() for tool in body.tools] if body.tools else None
        text = render_chat(lm.tokenizer, messages, add_generation_prompt=body.add_generation_prompt, tools=tools)
    ids = lm.tokenizer.encode(text or "", add_special_tokens=body.special_tokens())
    strs = [lm.tokenizer.id_to_token(token) or "" for token in ids] if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=lm.context_length, tokens=ids, token_strs=strs)


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    """vLLM's /tokenize: a text, or a chat rendered through the model's template, as token ids."""
    app = _app(request)
    if body.model is not None:
        check_model(app.lm, body.model)
    _check_form(body)
    async with app.runner.admit():
        return await app.runner.call(_tokenize, app.lm, body)


def _detokenize(lm: LM, tokens: list[int]) -> DetokenizeResponse:
    vocab_size = lm.tokenizer.vocab_size
    for index, token in enumerate(tokens):
        if not 0 <= token < vocab_size:
            raise APIError(
                400,
                f"tokens[{index}] is {token}, outside the vocabulary [0, {vocab_size}): send ids of {lm.name}'s tokens",
                param="tokens",
            )
    return DetokenizeResponse(prompt=lm.tokenizer.decode(tokens))


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    """vLLM's /detokenize: token ids back to text, special tokens included."""
    app = _app(request)
    if body.model is not None:
        check_model(app.lm, body.model)
    async with app.runner.admit():
        return await app.runner.call(_detokenize, app.lm, body.tokens)


@router.get("/tokenizer_info")
async def tokenizer_info(request: Request) -> TokenizerInfoResponse:
    """What a remote tokenizer needs to stand in for the local one (lm-eval's RemoteTokenizer reads it)."""
    lm = _app(request).lm
    tokenizer = lm.tokenizer
    named = tokenizer.named_tokens
    added = tokenizer.backend.get_added_tokens_decoder()
    return TokenizerInfoResponse(
        tokenizer_class=type(tokenizer).__name__,
        bos_token=named.get("bos_token"),
        eos_token=named.get("eos_token"),
        pad_token=named.get("pad_token"),
        unk_token=named.get("unk_token"),
        chat_template=tokenizer.chat_template,
        model_max_length=lm.context_length,
        added_tokens_decoder={str(token_id): token.content for token_id, token in sorted(added.items())},
    )
