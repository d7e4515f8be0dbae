"""`decodelab.load("http://host:port/v1", model=..., api_key=..., tokenizer=...)`: a model on another server.

The tokenizer is decodelab's own, so prompts, chat templates, stop tokens and each token's bytes are exact:
a `decodelab serve` hands out its whole tokenizer (`GET /api/tokenizer`); for any other server, `tokenizer`
names one (a model directory, a `.gguf` file, "bundled", or a hub id), by default the served model's id read
as a hub id, and where the server tokenizes, a probe text must come out the same on both sides
(`remote.tokenizer_check`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import tokenizers

from decodelab.errors import DecodelabError, ModelNotFound
from decodelab.remote.backend import RemoteBackend
from decodelab.remote.capabilities import Capabilities, discover
from decodelab.remote.client import RemoteClient
from decodelab.remote.tokenizer_check import check_tokenizer
from decodelab.tokenizer import Tokenizer

if TYPE_CHECKING:
    from decodelab.model import LM

URL_PREFIXES = ("http://", "https://")
DEFAULT_CONTEXT = 2048  # when the server does not say: llama-cpp-python's default n_ctx


def is_remote(name: object) -> bool:
    return isinstance(name, str) and name.startswith(URL_PREFIXES)


def load_remote(
    url: str,
    model: str | None = None,
    api_key: str | None = None,
    tokenizer: str | Tokenizer | None = None,
    top_logprobs: int | None = None,
    context_length: int | None = None,
) -> LM:
    from decodelab.model import LM

    client = RemoteClient(url, api_key)
    caps = discover(client, model, top_logprobs)
    eos_ids: tuple[int, ...] = ()
    vocab_size = None
    if tokenizer is None and caps.engine == "decodelab":
        shared = client.get("/api/tokenizer")  # the server's own: nothing to check
        chosen = Tokenizer(
            tokenizers.Tokenizer.from_str(shared["tokenizer_json"]), shared["chat_template"], shared["named_tokens"]
        )
        eos_ids, vocab_size = tuple(shared["eos_ids"]), shared["vocab_size"]
    else:
        if isinstance(tokenizer, Tokenizer):
            chosen, described = tokenizer, "the given tokenizer"
        else:
            chosen = _local_tokenizer(tokenizer or caps.model, caps)
            described = f"the tokenizer {tokenizer or caps.model!r}"
        check_tokenizer(client, caps, chosen, described)
    if (
        not eos_ids
        and (eos := chosen.named_tokens.get("eos_token"))
        and (eos_id := chosen.token_to_id(eos)) is not None
    ):
        eos_ids = (eos_id,)
    context = context_length or caps.context_length or DEFAULT_CONTEXT
    backend = RemoteBackend(client, caps, chosen, vocab_size or chosen.vocab_size, context)
    backend.check_top_logprobs()
    return LM(caps.model, backend, chosen, eos_ids, source="remote")  # type: ignore[arg-type]  # the Backend contract


def _local_tokenizer(name: str, caps: Capabilities) -> Tokenizer:
    """A tokenizer named by path, `.gguf`, "bundled" or hub id; offline without it, one clear error."""
    from decodelab.gguf_cache import BUNDLED_ALIASES, bundled_gguf_path, ensure_converted

    path = Path(name).expanduser()
    if name.lower() in BUNDLED_ALIASES:
        return Tokenizer.from_directory(ensure_converted(bundled_gguf_path(), progress=None))
    if path.is_file() and path.suffix.lower() == ".gguf":
        return Tokenizer.from_directory(ensure_converted(path, progress=None))
    if path.is_dir():
        return Tokenizer.from_directory(path)
    try:
        from transformers import AutoTokenizer

        return Tokenizer.from_transformers(AutoTokenizer.from_pretrained(name))
    except (OSError, ValueError, json.JSONDecodeError) as error:
        raise ModelNotFound(
            f"decodelab needs the tokenizer of {caps.model!r} (served by {caps.engine}) and could not load "
            f"{name!r} ({str(error).splitlines()[0][:120]}): pass tokenizer= (--tokenizer) a model directory, "
            "a .gguf file or a hub id"
        ) from None
    except DecodelabError:
        raise
