"""The tiny GPT's tokenizer: one token per byte, so any UTF-8 text (Korean included) encodes with 256 ids.

It is an ordinary `tokenizers.Tokenizer` (GPT-2's byte-level BPE with no merges), wrapped in decodelab's
`Tokenizer`, so token views, `<0xNN>` pieces for partial characters and Step records work unchanged. Token id
n is byte n: "A" is 65, and "한" is the three ids 237, 149, 156.
"""

from __future__ import annotations

from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

from decodelab.tokenizer import Tokenizer, byte_level_alphabet

BYTE_VOCAB_SIZE = 256


def byte_tokenizer() -> Tokenizer:
    """A decodelab `Tokenizer` whose ids are the UTF-8 bytes of the text."""
    return Tokenizer(_byte_level_backend())


def save_byte_tokenizer(directory: Path) -> None:
    """Write `tokenizer.json`, so `Tokenizer.from_directory` (and every `--model DIR` command) reads it back."""
    _byte_level_backend().save(str(directory / "tokenizer.json"))


def _byte_level_backend() -> tokenizers.Tokenizer:
    # GPT-2 spells each byte as a printable stand-in character ('Ġ' is the space byte); id = byte value.
    vocab = {stand_in: byte for stand_in, byte in byte_level_alphabet().items()}
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return backend
