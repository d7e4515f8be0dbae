"""Small pure measures for comparing decoding strategies: diversity, repetition, entropy and nucleus size.

`distinct_n` and `repeated_ngram_rate` read a sequence of token ids or words; `mean_entropy` and
`mean_nucleus_size` read records that carry those numbers (`Step`s of a traced generation, or the
`ScoredToken`s of a `Score`, which computes both from the raw distribution at every position);
`nucleus_sizes` is the one implementation of "how many tokens hold mass p" that scoring uses too.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

import torch

from decodelab.errors import BadInput


def _check_n(n: Any) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BadInput(f"n must be a whole number >= 1, got {n!r}")
    return n


def _check_items(items: Sequence[Hashable]) -> Sequence[Hashable]:
    if isinstance(items, (str, bytes)):
        raise BadInput(f"give a list of token ids or words, not a string ({items[:20]!r}...): split it first")
    return items


def _ngrams(items: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    """Every run of `n` consecutive items, in order (none when the sequence is shorter than `n`)."""
    return [tuple(items[i : i + n]) for i in range(len(items) - n + 1)]


def distinct_n(items: Sequence[Hashable], n: int) -> float:
    """Unique n-grams / all n-grams (1.0 = no n-gram repeats); 0.0 when the sequence has no n-gram.

    distinct_n("the cat the cat the".split(), 1) == 2 / 5; with n=2: {the cat, cat the} / 4 == 0.5.
    """
    grams = _ngrams(_check_items(items), _check_n(n))
    return len(set(grams)) / len(grams) if grams else 0.0


def repeated_ngram_rate(items: Sequence[Hashable], n: int = 3) -> float:
    """Fraction of n-grams that already occurred earlier in the sequence; 0.0 when there is no n-gram.

    [a, b, c, a, b, c, a] has 3-grams abc, bca, cab, abc, bca: the last two were seen before, so 2 / 5.
    """
    grams = _ngrams(_check_items(items), _check_n(n))
    seen: set[tuple[Hashable, ...]] = set()
    repeats = 0
    for gram in grams:
        repeats += gram in seen
        seen.add(gram)
    return repeats / len(grams) if grams else 0.0


def _records(records: Any) -> list[Any]:
    """A `Score` stands for its tokens; anything else is an iterable of records."""
    return list(getattr(records, "tokens", records))


def mean_entropy(records: Iterable[Any]) -> float:
    """Mean `entropy` (nats) of `Step`s or `ScoredToken`s (or a `Score`); nan when there are none.

    Steps of an untraced generation (`trace=False`) carry no entropy: that is an error, not a silent nan.
    """
    records = _records(records)
    for index, record in enumerate(records):
        if math.isnan(record.entropy):
            raise BadInput(f"record {index} has no entropy (entropy=nan): generate with trace=True, or score the text")
    return sum(record.entropy for record in records) / len(records) if records else math.nan


def mean_nucleus_size(records: Iterable[Any]) -> float:
    """Mean `nucleus_size` of the `ScoredToken`s of a `Score` (or the `Score` itself); nan when there are none.

    Steps do not keep the whole distribution, so the nucleus comes from scoring: `score_ids(lm, prompt_ids +
    result.token_ids, len(prompt_ids))` measures it at every position of the generated path in one forward.
    """
    records = _records(records)
    return sum(record.nucleus_size for record in records) / len(records) if records else math.nan


def _check_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise BadInput(f"p must be in (0, 1], got {p!r}")
    return float(p)


def nucleus_sizes(probs: torch.Tensor, p: float = 0.9) -> torch.Tensor:
    """For each distribution in `probs` (..., V): the smallest number of most likely tokens whose mass reaches p.

    The same set `TopP(p)` keeps (up to float rounding exactly at the boundary). Sums run in float64.
    """
    p = _check_p(p)
    if probs.dim() == 0 or probs.shape[-1] == 0:
        raise BadInput(f"probs must have a vocabulary axis with at least one token, got shape {tuple(probs.shape)}")
    vocab = probs.shape[-1]
    rows = probs.reshape(-1, vocab)  # (R, V)
    sizes = torch.empty(rows.shape[0], dtype=torch.long, device=probs.device)  # (R,)
    pending = torch.arange(rows.shape[0], device=probs.device)
    k = min(vocab, 64)
    while pending.numel():
        # Add up the k most likely tokens' mass, most likely first; where it reaches p, the nucleus is the tokens
        # taken before that plus the one that crosses p. Rows still short of p (a flat distribution) are sorted
        # whole, which costs less than wider rounds of topk; at k = V the sum may stay under p by rounding: all
        # V then.
        pending_rows = rows[pending]  # (r, V)
        top = pending_rows.sort(dim=-1, descending=True) if k == vocab else pending_rows.topk(k, dim=-1)
        mass = top.values.double().cumsum(dim=-1)  # (r, k)
        done = (mass[:, -1] >= p) | (k == vocab)  # (r,)
        sizes[pending[done]] = ((mass[done] < p).sum(dim=-1) + 1).clamp(max=vocab)
        pending, k = pending[~done], vocab
    return sizes.reshape(probs.shape[:-1])  # (...)


def nucleus_size(probs: torch.Tensor | Sequence[float], p: float = 0.9) -> int:
    """The smallest number of most likely tokens whose mass reaches p, for one distribution (V,).

    nucleus_size([0.5, 0.3, 0.15, 0.05], 0.9) == 3; with p=0.8 it is 2; with p=0.5 it is 1.
    """
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.dim() != 1:
        raise BadInput(f"probs must be one distribution (V,), got shape {tuple(probs.shape)}")
    return int(nucleus_sizes(probs, p))
