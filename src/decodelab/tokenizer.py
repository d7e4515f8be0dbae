"""Text <-> token ids, plus what decodelab needs to show a token honestly: its raw bytes and specialness.

Wraps a Hugging Face `tokenizers.Tokenizer` (the engine inside every "fast" transformers tokenizer),
read straight from `tokenizer.json` so the bundled model never pays for importing transformers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, overload

import tokenizers

from decodelab.errors import BadInput, DecodelabError


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's printable stand-ins for raw bytes ('Ġ' is the space byte 0x20), mapped back to the bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in stand_ins:
            stand_ins[byte] = chr(256 + shifted)
            shifted += 1
    return {char: byte for byte, char in stand_ins.items()}


class Tokenizer:
    """Encodes and decodes text, and knows each token's bytes, special tokens and chat template."""

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        chat_template: str | None = None,
        named_tokens: dict[str, str] | None = None,
    ):
        self.backend = backend
        self.chat_template = chat_template  # Jinja source, or None for a plain LM
        self.named_tokens = named_tokens or {}  # e.g. {"eos_token": "<|im_end|>", "bos_token": ...}
        added = backend.get_added_tokens_decoder()
        self.special_ids = frozenset(i for i, token in added.items() if token.special)
        self._added_ids = frozenset(added)
        self._byte_level = type(backend.decoder).__name__ == "ByteLevel"
        self._bytes_cache: dict[int, bytes] = {}
        self.texts = TokenTexts(self)  # each token's text, built on first use

    @classmethod
    def from_directory(cls, directory: Path) -> Tokenizer:
        """Read `tokenizer.json`, `tokenizer_config.json` and `chat_template.jinja` as transformers saves them."""
        backend = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        template_path = directory / "chat_template.jinja"
        template = template_path.read_text() if template_path.is_file() else config.get("chat_template")
        return cls(backend, template, _named_tokens(config))

    @classmethod
    def from_transformers(cls, hf_tokenizer: Any) -> Tokenizer:
        """Adopt a transformers tokenizer; it must be a "fast" one (backed by `tokenizers`)."""
        backend = getattr(hf_tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise DecodelabError(
                f"{type(hf_tokenizer).__name__} is a slow (pure Python) tokenizer; decodelab needs a fast one: "
                "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        named = {
            name: str(getattr(hf_tokenizer, name))
            for name in ("bos_token", "eos_token", "pad_token", "unk_token")
            if getattr(hf_tokenizer, name, None) is not None
        }
        template = getattr(hf_tokenizer, "chat_template", None)
        return cls(backend, template if isinstance(template, str) else None, named)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_with_offsets(
        self, text: str, add_special_tokens: bool = True
    ) -> tuple[list[int], list[tuple[int, int]]]:
        """Ids and, for each, its [start, end) character span in `text` (a byte piece spans its whole character)."""
        encoding = self.backend.encode(text, add_special_tokens=add_special_tokens)
        return encoding.ids, [(start, end) for start, end in encoding.offsets]

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)

    def is_special(self, token_id: int) -> bool:
        return token_id in self.special_ids

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes this token contributes to decoded text (a Korean syllable may need three tokens)."""
        cached = self._bytes_cache.get(token_id)
        if cached is None:
            cached = self._bytes_cache[token_id] = self._compute_token_bytes(token_id)
        return cached

    def _compute_token_bytes(self, token_id: int) -> bytes:
        token = self.backend.id_to_token(token_id)
        if token is None:
            raise BadInput(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        if token_id in self._added_ids:
            return token.encode()  # added tokens are stored as plain text
        if self._byte_level:
            alphabet = byte_level_alphabet()
            if all(char in alphabet for char in token):
                return bytes(alphabet[char] for char in token)
            return token.encode()
        if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            return bytes([int(token[3:5], 16)])  # SentencePiece byte-fallback token
        return token.replace("\u2581", " ").encode()  # SentencePiece marks a leading space with '▁'


def _named_tokens(config: dict) -> dict[str, str]:
    named = {}
    for name in ("bos_token", "eos_token", "pad_token", "unk_token"):
        value = config.get(name)
        if isinstance(value, dict):  # older configs store AddedToken dicts
            value = value.get("content")
        if isinstance(value, str):
            named[name] = value
    return named


class TokenTexts(Sequence[str]):
    """Every token's text, id -> str (its bytes decoded alone; a partial character reads U+FFFD). Built on first
    use and kept: stages that match text (DRY's sequence breakers) read it as `History.vocabulary`."""

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._texts: tuple[str, ...] | None = None

    def _all(self) -> tuple[str, ...]:
        if self._texts is None:
            token_bytes = self._tokenizer.token_bytes
            self._texts = tuple(
                token_bytes(i).decode("utf-8", errors="replace") for i in range(self._tokenizer.vocab_size)
            )
        return self._texts

    def __len__(self) -> int:
        return len(self._all())

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[str]: ...
    def __getitem__(self, index: int | slice) -> str | Sequence[str]:
        return self._all()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())
