"""What a decoding loop asks of the model, as values: the loop yields them, and whoever drives it runs them.

    Forward       one new token per row of a DecodeState: the model's next logits land in `state.logits`
    PrefillChunk  part of a prompt read into a cache; the logits after its last position are kept

A loop written as a generator of these (a `Generation`'s, a `Session` step's) is one piece of code for two
drivers: `run_alone` runs each item as it comes, so the loop runs by itself; the server's scheduler collects
the Forwards of every running loop and runs them as one batched step (`run_together`), each group of rows on
its own cache, so requests share the pass that reads the weights.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from decodelab.backends.base import Backend, Cache

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
    """`ids` (B, T), a slice of a prompt that continues what `cache` holds; `logits` (B, V) after its last id."""

    backend: Backend
    ids: torch.Tensor  # (B, T)
    cache: Cache
    logits: torch.Tensor | None = None  # (B, V), once run

    def run(self) -> None:
        self.logits = self.backend.forward(self.ids, self.cache, last_only=True)[:, -1]


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
