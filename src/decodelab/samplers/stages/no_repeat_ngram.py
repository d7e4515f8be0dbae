"""`no_repeat_ngram`: never repeat an n-gram already in the sequence (transformers' no_repeat_ngram_size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from decodelab.samplers.base import FILTERED, History, Stage, is_whole, setting
from decodelab.samplers.registry import register


@register
@dataclass(frozen=True)
class NoRepeatNGram(Stage):
    """Ban any token that would complete an n-gram already present in the sequence (transformers)."""

    no_repeat_ngram_size: int = setting(
        kind="int",
        off=(0,),
        metavar="N",
        slider=(0, 6, 1),
        allowed="must be a whole number >= 1 (0 turns it off)",
        check=lambda value: is_whole(value) and value >= 1,
        help="ban repeating any n-gram of this size, prompt included (0 = off)",
    )
    name: ClassVar[str] = "no_repeat_ngram"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 50

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        out = logits.clone()
        n = self.no_repeat_ngram_size
        for row, ids in enumerate(history.ids.tolist()):
            if len(ids) + 1 < n:
                continue
            # The last n - 1 ids are the prefix; every earlier occurrence of it bans the id that followed it.
            prefix = tuple(ids[len(ids) - n + 1 :]) if n > 1 else ()
            banned = {ids[i + n - 1] for i in range(len(ids) - n + 1) if tuple(ids[i : i + n - 1]) == prefix}
            if banned:
                out[row, list(banned)] = FILTERED
        return out
