"""Whether the tokenizer decodelab uses for a remote model reads text as the server does.

A remote model's prompts, pieces and chat templates go through a local tokenizer (see `remote.loading`); one
that is not the served model's own would send the server ids it reads as other text, and every trace would be
wrong without an error. So at load, where the server tokenizes (`/tokenize` on vLLM, llama.cpp and
`decodelab serve`, `/extras/tokenize` on llama-cpp-python), one probe text is tokenized on both sides and a
difference is one error. A server without such a route is not checked.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decodelab.errors import BadInput
from decodelab.remote.capabilities import Capabilities
from decodelab.remote.client import RemoteClient, RemoteError
from decodelab.tokenizer import Tokenizer

PROBE = "Tokens, 토큰 and 12345 numbers!"  # words, Korean (byte pieces in many vocabularies) and digits
NO_ROUTE_STATUSES = (404, 405, 501)


def _vllm_form(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "prompt": text, "add_special_tokens": False}


# engine -> (its tokenize route from the server's root, the body that tokenizes a text without special tokens)
ROUTES: dict[str, tuple[str, Callable[[str, str], dict[str, Any]]]] = {
    "decodelab": ("/tokenize", _vllm_form),  # decodelab serve has vLLM's tokenizer routes
    "vllm": ("/tokenize", _vllm_form),
    "llama.cpp": ("/tokenize", lambda model, text: {"content": text, "add_special": False}),
    "llama-cpp-python": ("/extras/tokenize", lambda model, text: {"model": model, "input": text}),  # adds BOS
}


def server_token_ids(client: RemoteClient, caps: Capabilities, text: str) -> list[int] | None:
    """The ids the server reads `text` as, or None when it has no tokenize route."""
    route = ROUTES.get(caps.engine)
    if route is None:
        return None
    path, body = route
    try:
        reply = client.post(path, body(caps.model, text))
    except RemoteError as error:
        if error.status in NO_ROUTE_STATUSES:
            return None
        raise
    tokens = reply.get("tokens") if isinstance(reply, dict) else None
    if not isinstance(tokens, list):
        return None
    # llama.cpp's entries are ids, or {"id", "piece"} when pieces are asked for
    return [token["id"] if isinstance(token, dict) else token for token in tokens]


def check_tokenizer(client: RemoteClient, caps: Capabilities, tokenizer: Tokenizer, described: str) -> None:
    """One error when `tokenizer` ("the tokenizer 'NAME'") reads the probe text otherwise than the server does."""
    theirs = server_token_ids(client, caps, PROBE)
    if theirs is None:
        return
    ours = tokenizer.encode(PROBE, add_special_tokens=False)
    bos = tokenizer.named_tokens.get("bos_token")
    bos_id = tokenizer.token_to_id(bos) if bos else None
    if bos_id is not None and theirs[:1] == [bos_id] and ours[:1] != [bos_id]:
        theirs = theirs[1:]  # a route that adds the model's BOS (llama-cpp-python's)
    if theirs != ours:
        raise BadInput(
            f"{described} does not read text as this {caps.engine} server does: {PROBE!r} is "
            f"{_shown(ours)} here and {_shown(theirs)} there; pass the served model's own tokenizer with "
            "tokenizer= (--tokenizer): its directory, its .gguf file or its hub id"
        )


def _shown(ids: list[int]) -> str:
    return str(ids) if len(ids) <= 12 else f"{str(ids[:12])[:-1]}, ...] ({len(ids)} ids)"
