"""Training text: read and check a corpus, split it into train and validation bytes, and cut batches.

With no file given, the corpus is the documentation text every Python install carries in the standard library's
`pydoc_data.topics` (what `help("if")` prints: about 460,000 characters of English prose and code), so the demo
trains offline. Any UTF-8 text file works; a missing, empty or binary file is one clear error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import torch

from decodelab.errors import BadInput

DEFAULT_CORPUS = "pydoc_data"  # the name the built-in corpus goes by in checkpoints and messages
VALIDATION_FRACTION = 0.1  # the last tenth of the bytes is held out for validation


@dataclass(frozen=True)
class Corpus:
    name: str  # the file's absolute path (so a resume from another directory finds it), or DEFAULT_CORPUS
    text: str

    @property
    def data(self) -> torch.Tensor:
        """The UTF-8 bytes as token ids (N,) uint8: the byte tokenizer's id of a byte is its value."""
        return torch.frombuffer(bytearray(self.text.encode("utf-8")), dtype=torch.uint8)

    def split(self, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and validation ids, (N_train,) and (N_val,); each must hold at least one block plus a target."""
        data = self.data
        cut = _train_length(len(data))
        train, validation = data[:cut], data[cut:]
        if len(validation) < block_size + 1:
            needed = next(n for n in count(block_size + 1) if n - _train_length(n) >= block_size + 1)  # the fewest
            raise BadInput(
                f"corpus {self.name} has {len(data)} bytes, too few for blocks of {block_size} "
                f"(its validation tenth needs {block_size + 1}): give at least {needed} bytes or a smaller --block-size"
            )
        return train, validation


def _train_length(total: int) -> int:
    """How many of `total` bytes are for training; the rest (at least a tenth) are held out."""
    return int(total * (1 - VALIDATION_FRACTION))


def read_corpus(path: str | Path | None = None) -> Corpus:
    """The text of `path` (a UTF-8 file), or the built-in pydoc corpus when `path` is None."""
    if path is None:
        return Corpus(DEFAULT_CORPUS, default_corpus_text())
    path = Path(os.path.abspath(Path(path).expanduser()))
    if not path.exists():
        raise BadInput(
            f"corpus file {str(path)!r} does not exist: pass a UTF-8 text file, or no --corpus for the built-in one"
        )
    if not path.is_file():
        raise BadInput(f"corpus {str(path)!r} is not a file: pass a UTF-8 text file")
    raw = path.read_bytes()
    if b"\x00" in raw:
        raise BadInput(f"corpus {str(path)!r} contains NUL bytes, so it is binary, not text: pass a UTF-8 text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInput(
            f"corpus {str(path)!r} is not UTF-8 text (byte 0x{raw[error.start]:02X} at offset {error.start}): "
            "convert it to UTF-8 or pass another file"
        ) from None
    if not text.strip():
        raise BadInput(f"corpus {str(path)!r} is empty: pass a file with some text in it")
    return Corpus(str(path), text)


def default_corpus_text() -> str:
    """The standard library's pydoc topic texts, in a fixed order, separated by blank lines."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name].strip() for name in sorted(topics)) + "\n"


def random_batch(
    data: torch.Tensor, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`batch_size` windows at random offsets: inputs (B, T) and targets (B, T), the same bytes shifted by one."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    windows = torch.stack([data[start : start + block_size + 1] for start in starts.tolist()]).long()  # (B, T+1)
    return windows[:, :-1], windows[:, 1:]


def evaluation_windows(
    data: torch.Tensor, block_size: int, max_windows: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows evenly spread over `data` (all of them when `max_windows` is None): the same
    windows every time, so validation losses are comparable across steps. Inputs and targets, each (W, T)."""
    count = (len(data) - 1) // block_size
    chosen = (
        range(count)
        if max_windows is None or max_windows >= count
        else (round(i * (count - 1) / max(max_windows - 1, 1)) for i in range(max_windows))
    )
    windows = torch.stack([data[i * block_size : i * block_size + block_size + 1] for i in chosen]).long()  # (W, T+1)
    return windows[:, :-1], windows[:, 1:]


def character_count(targets: torch.Tensor) -> int:
    """How many characters the target bytes (any shape) spell: every byte except UTF-8 continuation bytes
    (0b10xxxxxx) starts one. Dividing nats by this gives nats per character."""
    return int(((targets & 0xC0) != 0x80).sum())
