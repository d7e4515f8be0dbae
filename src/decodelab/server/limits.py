"""The limits a server states and enforces, and what a request costs against them.

Memory on the server is bounded by construction: every request is priced before anything is allocated
(KV-cache tokens: rows x (prompt + new tokens), beams and strategies included) and refused with a 400
when it could never fit or a 429 while others hold the budget. `GET /api/info` reports these numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from decodelab.generation_config import MAX_TOP_N

MiB = 2**20
MAX_CONSTRAINT_CHARS = 20_000  # characters of one constraint's source (schema, regex, choices or grammar)


def _limit(default: int | float, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ServerLimits:
    """Each field is also a `decodelab serve` option (max_queue -> --max-queue), its help text below."""

    max_body_bytes: int = _limit(4 * MiB, "largest request body in bytes; larger ones get 413")
    max_prompt_chars: int = _limit(200_000, "characters of text in one request, checked before tokenizing")
    max_batch: int = _limit(16, "rows of running generations stepped together in one batched forward")
    max_queue: int = _limit(32, "requests admitted beyond --max-batch, waiting their turn; more get 429")
    prefill_chunk: int = _limit(
        128, "prompt tokens read per step while others generate (a long prompt delays them a chunk at a time)"
    )
    max_batch_tokens: int = _limit(
        65_536,
        "KV-cache tokens that admitted requests may hold at once "
        "(rows x (prompt + new tokens)); one request over it gets 400",
    )
    max_sessions: int = _limit(32, "live explorer sessions; more get 429 (none is evicted)")
    max_session_tokens: int = _limit(65_536, "KV-cache tokens all live sessions may hold together")
    session_ttl: float = _limit(1800.0, "seconds an idle session lives")
    max_beams: int = _limit(16, "beams of one beam search (and of each beam:K in a compare)")
    max_strategies: int = _limit(8, "strategies of one compare")
    header_timeout: float = _limit(10.0, "seconds a client may take to send its request line and headers")
    body_timeout: float = _limit(30.0, "seconds a client may take to send a request body")
    max_connections: int = _limit(256, "open connections; more get 503")

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"{name} must be a number > 0, got {value!r}")

    def to_dict(self) -> dict:
        return {**asdict(self), "max_top_n": MAX_TOP_N, "max_constraint_chars": MAX_CONSTRAINT_CHARS}


def kv_bytes_per_token(backend) -> int | None:
    """Bytes of KV cache one position of one row takes (all layers, keys and values), when the model says."""
    model = getattr(backend, "model", backend)
    config = getattr(model, "config", None)
    if config is None:
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layers = _first(text, "num_layers", "num_hidden_layers", "n_layer")
    heads = _first(text, "num_kv_heads", "num_key_value_heads", "num_attention_heads", "n_head")
    width = _first(text, "hidden_size", "n_embd", "d_model")
    head_dim = _first(text, "head_dim") or (
        width // (_first(text, "num_attention_heads", "n_head") or 1) if width else None
    )
    if not (layers and heads and head_dim):
        return None
    element = torch.finfo(backend.dtype).bits // 8 if backend.dtype.is_floating_point else 4
    return 2 * layers * heads * head_dim * element  # keys and values


def _first(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def describe_tokens(tokens: int, bytes_per_token: int | None) -> str:
    """'65536 KV tokens (3.0 GB)' when the size of a token is known."""
    if bytes_per_token is None:
        return f"{tokens} KV tokens"
    return f"{tokens} KV tokens ({tokens * bytes_per_token / 1e9:.1f} GB)"


def kv_cost(rows: int, prompt_length: int, new_tokens: int, context_length: int) -> tuple[int, str]:
    """KV-cache tokens of `rows` rows that read the prompt and then up to `new_tokens` more (never past the
    context), and how that adds up: (tokens, 'n=4 x (12 prompt + 64 new)')."""
    length = min(context_length, prompt_length + new_tokens)
    rows_text = f"{rows} row{'s' if rows != 1 else ''}"
    return rows * length, f"{rows_text} x ({prompt_length} prompt + {length - prompt_length} new)"
