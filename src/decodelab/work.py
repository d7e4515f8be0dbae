"""What a decoding loop asks of the model, as values: the loop yields them, and whoever drives it runs them.

    Forward       one new token per row of a DecodeState: the model's next logits land in `state.logits`
    PrefillChunk  part of a prompt read into a cache; the logits after its last position are kept (and, asked
                  with `keep_all`, those after every position: what scoring a prompt reads)

A loop written as a generator of these (a `Generation`'s, a `Session` step's) is one piece of code for two
drivers: `run_alone` runs each item as it comes, so the loop runs by itself; the server's scheduler collects
the Forwards of every running loop and runs them as one batched step (`run_together`), each group of rows on
its own cache, so requests share the pass that reads the weights; and the first chunks of several prompts as one
padded forward (`run_prefills_together`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from decodelab.backends.base import Backend, Cache
from decodelab.backends.kv_cache import LayerKVCache

if TYPE_CHECKING:
    from decodelab.decoding import DecodeState

T = TypeVar("T")


class Work:
    """One request to the model; `run()` computes it alone."""

    def run(self) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Forward(Work):
    """`tokens` (B, 1), already appended to `state.ids`, fed through `state.cache`; sets `state.logits` (B, V)."""

    state: DecodeState
    tokens: torch.Tensor  # (B, 1)

    def run(self) -> None:
        self.state.logits = self.state.backend.forward(self.tokens, self.state.cache)[:, -1]  # (B, V)


@dataclass(eq=False)
class PrefillChunk(Work):
    """`ids` (B, T), a slice of a prompt that continues what `cache` holds; `logits` (B, V) after its last id,
    and with `keep_all` `all_logits` (B, T, V) after each of its ids."""

    backend: Backend
    ids: torch.Tensor  # (B, T)
    cache: Cache
    keep_all: bool = False
    logits: torch.Tensor | None = None  # (B, V), once run
    all_logits: torch.Tensor | None = None  # (B, T, V), once run with keep_all

    def run(self) -> None:
        if self.keep_all:
            self.all_logits = self.backend.forward(self.ids, self.cache)  # (B, T, V)
            self.logits = self.all_logits[:, -1]
        else:
            self.logits = self.backend.forward(self.ids, self.cache, last_only=True)[:, -1]

    @property
    def starts_alone(self) -> bool:
        """One row from an empty cache of decodelab's own kind: `run_prefills_together` can take it."""
        return self.ids.shape[0] == 1 and isinstance(self.cache, LayerKVCache) and self.cache.length == 0


def run_alone(loop: Generator[Work, Any, T]) -> T:
    """Drive a loop that yields only Work, running each item at once; return what the loop returns."""
    while True:
        try:
            work = next(loop)
        except StopIteration as done:
            return done.value
        work.run()


def run_together(forwards: Sequence[Forward]) -> None:
    """Run several Forwards (of one backend) as one batched step when the backend can (`forward_groups`: the
    matmuls over every row, attention per group on its own cache); one alone runs exactly as `Forward.run`."""
    if not forwards:
        return
    backend = forwards[0].state.backend
    forward_groups = getattr(backend, "forward_groups", None)
    if forward_groups is None or len(forwards) == 1:
        for forward in forwards:
            forward.run()
        return
    logits = forward_groups([(forward.tokens, forward.state.cache) for forward in forwards])  # [(B_i, 1, V)]
    for forward, group_logits in zip(forwards, logits):
        forward.state.logits = group_logits[:, -1]


def run_prefills_together(chunks: Sequence[PrefillChunk]) -> None:
    """Run first chunks of several prompts (each `starts_alone`, one backend) as one forward: the prompts padded
    on the right to the longest, into a fresh cache of one row each; then each chunk's cache takes its row's
    keys and values up to its own length, and its logits are its row's. Attention is causal, so a row's padding
    comes after every position it keeps and changes none of them: each chunk's logits equal its own `run` up to
    the matmuls' summation order at another shape (~5e-5 measured, in logits and logprobs). One alone runs as
    `run`.
    Peak memory: the padded batch's logits, len(chunks) x longest x V."""
    if len(chunks) < 2:
        for chunk in chunks:
            chunk.run()
        return
    backend = chunks[0].backend
    if not all(chunk.starts_alone and chunk.backend is backend for chunk in chunks):
        raise ValueError("run_prefills_together takes one-row first chunks of one backend (PrefillChunk.starts_alone)")
    lengths = [chunk.ids.shape[1] for chunk in chunks]
    padded = torch.zeros(len(chunks), max(lengths), dtype=chunks[0].ids.dtype, device=chunks[0].ids.device)
    for row, chunk in enumerate(chunks):
        padded[row, : lengths[row]] = chunk.ids[0]  # (N, T_max): row i is chunk i's ids, then padding
    together = backend.new_cache(len(chunks))
    logits = backend.forward(padded, together)  # (N, T_max, V)
    for row, (chunk, length) in enumerate(zip(chunks, lengths)):
        cache = chunk.cache
        assert isinstance(cache, LayerKVCache) and isinstance(together, LayerKVCache)  # starts_alone checked it
        cache.take_row(together, row, length)
        chunk.logits = logits[row : row + 1, length - 1]  # (1, V)
        if chunk.keep_all:
            chunk.all_logits = logits[row : row + 1, :length]  # (1, T, V)
