"""What an OpenAI-compatible server offers, found from the outside with a request or two.

Servers differ in exactly what the remote backend needs (see README "Remote models"):

| engine           | prompt as ids | echo + logprobs (scoring) | how logprobs name tokens              |
|------------------|---------------|---------------------------|---------------------------------------|
| decodelab        | yes           | yes                       | `token_id:N` (vLLM's flag)            |
| vLLM             | yes           | yes                       | `token_id:N` (`return_tokens_as_token_ids`) |
| llama.cpp server | yes           | no ("Only no echo")       | each entry's `id`                     |
| llama-cpp-python | no (a 500)    | misaligned without BOS    | text only (partial UTF-8 as "")       |

The engine is told by `GET /v1/models`: decodelab's cards carry `decodelab`, vLLM's `max_model_len`, llama.cpp's
`meta`, llama-cpp-python's are `owned_by: "me"`. Anything else is a plain OpenAI-compatible server.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from decodelab.errors import BadInput, Unsupported
from decodelab.remote.client import RemoteClient, RemoteError

DEFAULT_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs, OpenAI's chat limit and decodelab's


@dataclass(frozen=True)
class Capabilities:
    engine: str  # "decodelab" | "vllm" | "llama.cpp" | "llama-cpp-python" | "openai-compatible"
    model: str  # the served model's id, as requests name it
    top_logprobs: int  # alternatives one request may ask for per position
    id_prompts: bool  # /v1/completions takes a prompt as token ids (else the prefix is sent as text)
    echo: bool  # echo with logprobs gives every prompt token's logprob, aligned: what scoring a text needs
    token_naming: str  # how logprobs name a token: "token_id" ("token_id:N"), "id" (an entry's id), "text"
    context_length: int | None  # positions the served model reads, when the server says

    def require(self, feature: str, capability: str) -> None:
        """One clear error when `feature` needs a capability this server lacks."""
        if not getattr(self, capability):
            needs = {
                "echo": "each prompt token's logprob (echo with logprobs)",
                "id_prompts": "prompts sent as token ids",
            }[capability]
            raise Unsupported(
                f"{feature} needs {needs}, which this {self.engine} server does not give: point decodelab at "
                "vLLM or `decodelab serve`, or run the model locally"
            )

    def to_dict(self) -> dict:
        return asdict(self)


def discover(client: RemoteClient, model: str | None = None, top_logprobs: int | None = None) -> Capabilities:
    """The capabilities of the server behind `client` for `model` (None: the one it serves)."""
    listing = client.get("models")
    cards = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(cards, list) or not cards:
        raise RemoteError(f"{client.url('models')} lists no models: is this an OpenAI-compatible server?")
    names = [card.get("id") for card in cards]
    if model is None:
        if len(cards) > 1:
            raise BadInput(f"{client.base_url} serves {len(cards)} models ({', '.join(map(str, names))}): name one")
        card = cards[0]
    elif model in names:
        card = cards[names.index(model)]
    else:
        raise BadInput(f"{client.base_url} does not serve {model!r}; it serves {', '.join(map(str, names))}")
    engine = _engine(client, card)
    top = top_logprobs if top_logprobs is not None else DEFAULT_TOP_LOGPROBS
    if top < 1:
        raise BadInput(f"top_logprobs must be at least 1, got {top}")
    name = str(card["id"])
    if engine == "decodelab":
        info = client.get("/tokenizer_info")
        return Capabilities(engine, name, top, True, True, "token_id", info.get("model_max_length"))
    if engine == "vllm":
        return Capabilities(engine, name, top, True, True, "token_id", card.get("max_model_len"))
    if engine == "llama.cpp":
        props = client.get("/props")
        context = props.get("default_generation_settings", {}).get("n_ctx") if isinstance(props, dict) else None
        return Capabilities(engine, name, top, True, False, "id", context)
    if engine == "llama-cpp-python":
        return Capabilities(engine, name, top, False, False, "text", None)
    return Capabilities(engine, name, min(top, 5), False, False, "text", None)  # OpenAI's legacy limit: 5


def _engine(client: RemoteClient, card: dict[str, Any]) -> str:
    if "decodelab" in card:
        return "decodelab"
    if "max_model_len" in card:
        return "vllm"
    if "meta" in card:
        return "llama.cpp"
    if card.get("owned_by") == "me":
        return "llama-cpp-python"
    return "openai-compatible"
