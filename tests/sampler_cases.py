"""Inputs the sampler tests share: an empty history and random (4, 1000) logits of three kinds."""

from __future__ import annotations

import math

import torch

from decodelab.samplers import History

INF = math.inf
KINDS = ("plain", "ties", "neg_inf")


def no_history(rows: int = 1) -> History:
    return History(torch.zeros(rows, 0, dtype=torch.long), 0)


def random_logits(kind: str, seed: int) -> torch.Tensor:
    """(4, 1000) logits: plain, with many exact ties, or with some entries already removed (-inf)."""
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(4, 1000, generator=generator) * 3  # (B, V)
    if kind == "ties":
        logits = logits.round()  # ~15 distinct values over 1000 tokens
    elif kind == "neg_inf":
        logits[torch.rand(4, 1000, generator=generator) < 0.3] = -INF
    return logits
