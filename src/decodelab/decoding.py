"""The decode step as plain functions: prefill once, then advance one token at a time with the KV cache.

`prefill` feeds a prompt through the cache in chunks of `PREFILL_CHUNK` positions and keeps only the last
position's logits, so memory stays bounded however long the prompt: no (T, V) logits, no (T, T) attention.
`DecodeState` holds what a running decode needs (ids so far, the cache, the logits for the next token);
`select` picks tokens from the sampler chain's logits; `make_step` turns one choice into a `Step`.
The generation loop, sessions and beam search are built from these. The model work itself (a prefill chunk, a
one-token forward) is handed out as `decodelab.work` items, so a loop can run alone or batched with others.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Generator, Sequence

import torch

from decodelab.backends.base import Backend, Cache
from decodelab.errors import BadInput, Unsupported
from decodelab.records import Alternative, Step
from decodelab.samplers import History, StageReport
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import readable_piece
from decodelab.work import Forward, PrefillChunk, Work, run_alone

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio multiplier: spreads (seed, position) pairs over 64 bits
# Most positions one forward reads when a long sequence is fed through the cache (prefill, scoring): bounds a
# forward's activations and attention scores (chunk x past), and scoring's logits (chunk x V, 100 MB at V=49,152).
PREFILL_CHUNK = 512


def prefill(backend: Backend, ids: torch.Tensor, cache: Cache, chunk: int | None = None) -> torch.Tensor:
    """Feed `ids` (B, T) through `cache` (advanced in place); return the logits (B, V) for the token after them.

    The ids go in chunks of `chunk` (default PREFILL_CHUNK) positions, each attending to what the earlier ones
    left in the cache, and each forward computes the last position's logits only. A prompt of at most one
    chunk is a single forward, exactly as an unchunked prefill.
    """
    return run_alone(prefill_chunks(backend, ids, cache, chunk))


def prefill_chunks(
    backend: Backend,
    ids: torch.Tensor,
    cache: Cache,
    chunk: int | None = None,
    on_logits: Callable[[int, torch.Tensor], None] | None = None,
) -> Generator[PrefillChunk, None, torch.Tensor]:
    """`prefill` as work items, one chunk each (a scheduler runs them between other requests' steps); returns the
    logits (B, V) after the last id. `on_logits(begin, logits)`, when given, receives each chunk's logits after
    every position, (T_chunk, V) of row 0 (a prompt's own logprobs: `decodelab.prompt_logprobs`)."""
    if ids.shape[1] == 0:
        raise BadInput(f"nothing to prefill: ids of shape {tuple(ids.shape)} hold no positions")
    chunk = chunk or PREFILL_CHUNK
    for begin in range(0, ids.shape[1], chunk):
        work = PrefillChunk(backend, ids[:, begin : begin + chunk], cache, keep_all=on_logits is not None)
        yield work
        if on_logits is not None:
            assert work.all_logits is not None  # the driver ran it, keeping every position's
            on_logits(begin, work.all_logits[0])
            work.all_logits = None  # one chunk's logits live at a time
    assert work.logits is not None  # the driver ran it
    return work.logits  # (B, V)


def reorder_cache(cache: Cache, rows: torch.Tensor) -> None:
    """Keep batch rows `rows` (B,) of a KV cache, in that order, duplicating repeated ones (in place). A
    third-party backend's cache that does not meet the `Cache` contract is one clear error."""
    if not isinstance(cache, Cache):
        raise Unsupported(
            f"{type(cache).__name__} cannot reorder its rows, so this backend cannot sample several rows or beam search"
        )
    cache.reorder(rows)


class DecodeState:
    """Rows decoding the same prompt: `ids` (B, T) so far, the KV cache, and `logits` (B, V) for the next token."""

    def __init__(
        self,
        backend: Backend,
        prompt_ids: list[int],
        rows: int = 1,
        vocabulary: Sequence[str] | None = None,
        *,
        prefilled: bool = True,
        chunk: int | None = None,
    ):
        """`prefilled=False` leaves the prompt unread: drive `prefilling()` before reading `logits`. `chunk`: the
        prefill's chunk length (default PREFILL_CHUNK)."""
        if len(prompt_ids) >= backend.context_length:
            raise BadInput(
                f"prompt is {len(prompt_ids)} tokens but the model reads at most {backend.context_length}, "
                "leaving no room to generate: shorten it"
            )
        self.backend = backend
        self.prompt_length = len(prompt_ids)
        self.ids = torch.tensor([prompt_ids] * rows, device=backend.device)  # (B, T)
        self.cache: Cache = backend.new_cache(1)
        self.logits = torch.empty(0)  # (B, V) once the prompt is read
        self._chunk = chunk
        self.vocabulary = vocabulary  # each token's text, for stages that match text (DRY)
        # Stateful stages' memory (mirostat's mu), kept beside the cache so undo and fork restore it exactly:
        # `memory` now, and the memory before each token added after the prompt.
        self.memory: dict[str, torch.Tensor] = {}
        self._memory_before: list[dict[str, torch.Tensor]] = []
        if prefilled:
            run_alone(self.prefilling())

    def prefilling(self, on_logits: Callable[[int, torch.Tensor], None] | None = None) -> Generator[Work, None, None]:
        """Read the prompt into the cache, as work items (see `decodelab.work`); then `logits` are set.
        `on_logits`: as `prefill_chunks`' (the prompt's own logprobs)."""
        # The rows share a prompt: prefill one, then copy its cache (n times less work and activation memory).
        rows = self.ids.shape[0]
        logits = yield from prefill_chunks(self.backend, self.ids[:1], self.cache, self._chunk, on_logits)  # (1, V)
        self.logits = logits.expand(rows, -1).clone()  # (B, V)
        if rows > 1:
            reorder_cache(self.cache, torch.zeros(rows, dtype=torch.long, device=self.backend.device))

    @property
    def history(self) -> History:
        """What the sampler stages read, without seeds for this step (a stage that draws will not act)."""
        return self.seeded_history(())

    def seeded_history(self, step_seeds: Sequence[int | None]) -> History:
        """What the sampler stages read, with each row's seed for this step's random choices (XTC's coin)."""
        return History(self.ids, self.prompt_length, tuple(step_seeds), self.memory, self.vocabulary)

    @property
    def room(self) -> int:
        """Positions left in the context."""
        return self.backend.context_length - self.ids.shape[1]

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep rows `rows` (B',) of ids, cache and logits, in that order; a row named twice is duplicated
        (beam search continuing two children of one beam)."""
        reorder_cache(self.cache, rows)
        self.ids, self.logits = self.ids[rows], self.logits[rows]
        self.memory = {name: value[rows] for name, value in self.memory.items()}
        self._memory_before = [{name: value[rows] for name, value in past.items()} for past in self._memory_before]

    def advance(self, tokens: torch.Tensor, memory: dict[str, torch.Tensor] | None = None) -> None:
        """Append one token per row (B,) and compute the next logits from the cache; `memory` is the stateful
        stages' memory after choosing `tokens` (None: unchanged, as after a forced token)."""
        self.push(tokens, memory).run()

    def push(self, tokens: torch.Tensor, memory: dict[str, torch.Tensor] | None = None) -> Forward:
        """`advance` without the forward: append the tokens (B,) and the memory, and return the `Forward` that
        computes the next logits (run it, alone or batched, before reading `logits`)."""
        self.ids = torch.cat([self.ids, tokens[:, None]], dim=1)
        self._memory_before.append(self.memory)
        if memory is not None:
            self.memory = memory
        return Forward(self, tokens[:, None])

    def fork(self) -> DecodeState:
        """An independent copy (same backend, copied ids, logits, cache and memory)."""
        twin = copy.copy(self)
        twin.ids, twin.logits, twin.cache = self.ids.clone(), self.logits.clone(), self.cache.fork()
        twin.memory, twin._memory_before = dict(self.memory), list(self._memory_before)  # tensors never change
        return twin

    def truncate(self, length: int) -> None:
        """Forget everything after the first `length` ids (undo); the cache is cropped, not rebuilt."""
        if not self.prompt_length <= length <= self.ids.shape[1]:
            raise BadInput(f"cannot truncate to {length} tokens: keep between the prompt and {self.ids.shape[1]}")
        removed = self.ids.shape[1] - length
        if removed:
            self.memory = self._memory_before[-removed]
            del self._memory_before[-removed:]
        self.ids = self.ids[:, :length]
        self.cache.crop(length - 1)
        self.logits = prefill(self.backend, self.ids[:, length - 1 :], self.cache)  # (B, V) from the kept last id


def draw_seed(row_seed: int, position: int) -> int:
    """The seed of the draw at `position`: depends only on (seed, position), so undo/replay/fork reproduce it."""
    return (row_seed * _SEED_MIX + position) % 2**64


def select(final_logits: torch.Tensor, greedy: bool, row_seeds: list[int], position: int) -> torch.Tensor:
    """One token per row (B,): argmax, or a draw from softmax(final_logits) with a per-row, per-step generator."""
    if greedy:
        tokens = final_logits.argmax(dim=-1)  # (B,)
        if bool((final_logits.gather(1, tokens[:, None]) == float("-inf")).any()):  # a row with nothing left
            raise _nothing_left()
        return tokens
    probs = final_logits.softmax(dim=-1)  # (B, V); a row with nothing left is all NaN
    drawn = []
    for row, row_seed in enumerate(row_seeds):
        generator = torch.Generator(device=probs.device).manual_seed(draw_seed(row_seed, position))
        try:
            drawn.append(torch.multinomial(probs[row], 1, generator=generator))
        except RuntimeError:  # "probability tensor contains either inf, nan or element < 0"
            raise _nothing_left() from None
    return torch.cat(drawn)


def _nothing_left() -> BadInput:
    return BadInput(
        "the sampler chain removed every token (a ban or logit_bias of -inf on all of them?): "
        "leave at least one token allowed"
    )


def make_step(
    tokenizer: Tokenizer,
    raw_logits: torch.Tensor,
    final_logits: torch.Tensor,
    token_id: int,
    index: int,
    top_n: int,
    trace: bool,
    stages: list[StageReport] | None = None,
    row: int = 0,
    forced: bool = False,
    stop_ids: frozenset[int] = frozenset(),
) -> Step:
    """The record of choosing `token_id` given one row's raw (V,) and post-chain (V,) logits; `stop_ids` are the
    run's stop tokens (the Step says whether it is one, so no consumer has to know them)."""
    raw_logprobs = raw_logits.log_softmax(dim=-1)  # (V,)
    # An empty chain (plain greedy) hands back the raw logits: no second softmax on the per-token path.
    same = final_logits.data_ptr() == raw_logits.data_ptr() and final_logits.shape == raw_logits.shape
    chain_logprobs = raw_logprobs if same else final_logits.log_softmax(dim=-1)
    logprob = float(raw_logprobs[token_id])
    rank, entropy = 0, float("nan")
    top: tuple[Alternative, ...] = ()
    raw_top: tuple[Alternative, ...] = ()
    if trace:
        raw_probs = raw_logprobs.exp()
        rank = int((raw_logits > raw_logits[token_id]).sum()) + 1
        entropy = float(-(raw_probs * raw_logprobs).nansum())  # 0 * -inf terms are nan: skipped
        top = top_alternatives(tokenizer, chain_logprobs.exp(), top_n)
        raw_top = top_alternatives(tokenizer, raw_probs, top_n)
    raw = tokenizer.token_bytes(token_id)
    return Step(
        index=index,
        token_id=token_id,
        piece=readable_piece(raw),
        prob=float(chain_logprobs[token_id].exp()),
        raw_prob=float(raw_logprobs[token_id].exp()),
        logprob=logprob,
        rank=rank,
        entropy=entropy,
        top=top,
        raw_top=raw_top,
        stages=tuple(stages or ()) if trace else (),
        row=row,
        forced=forced,
        bytes=raw,
        is_stop=token_id in stop_ids,
        special=tokenizer.is_special(token_id),
    )


def top_alternatives(tokenizer: Tokenizer, probs: torch.Tensor, n: int) -> tuple[Alternative, ...]:
    """The `n` most likely tokens of `probs` (V,), most likely first."""
    if n == 0:
        return ()
    values, ids = torch.topk(probs, min(n, probs.numel()))
    alternatives = []
    for prob, token_id in zip(values.tolist(), ids.tolist()):
        raw = tokenizer.token_bytes(token_id)
        alternatives.append(Alternative(token_id, readable_piece(raw), prob, raw))
    return tuple(alternatives)
