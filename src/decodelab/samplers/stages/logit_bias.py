"""`logit_bias`: add a bias to chosen tokens' logits; `ban` (or a bias of -inf) removes tokens outright."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from decodelab.errors import BadInput
from decodelab.samplers.base import MAX_BIAS, History, Stage, is_number, is_token_id, setting
from decodelab.samplers.registry import register


def _is_bias_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        is_token_id(token) and ((is_number(bias) and abs(bias) <= MAX_BIAS) or bias == -math.inf)
        for token, bias in value.items()
    )


def _is_id_list(value: object) -> bool:
    return isinstance(value, (tuple, list)) and all(is_token_id(token) for token in value)


@register
@dataclass(frozen=True)
class LogitBias(Stage):
    """Add a bias to chosen tokens' logits; banned tokens (or a bias of -inf) can never be chosen."""

    logit_bias: dict[int, float] = setting(
        kind="token_bias",
        off=({},),
        metavar="ID=BIAS",
        allowed=f"must map token ids (whole numbers from 0) to biases in [-{MAX_BIAS:g}, {MAX_BIAS:g}] or -inf",
        check=_is_bias_map,
        help="add BIAS to the logit of token ID (-inf bans it)",
    )
    ban: tuple[int, ...] = setting(
        kind="token_ids",
        default=(),
        metavar="TOKEN",
        allowed="must be a list of token ids (whole numbers from 0)",
        check=_is_id_list,
        help="token id or single-token text that may never be chosen",
    )
    name: ClassVar[str] = "logit_bias"
    warper: ClassVar[bool] = False
    position: ClassVar[int] = 10

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> Stage | None:
        if not values["logit_bias"] and not values["ban"]:
            return None
        return cls(dict(values["logit_bias"]), tuple(values["ban"]))

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        bias = {**self.logit_bias, **dict.fromkeys(self.ban, -math.inf)}
        ids = torch.tensor(list(bias), dtype=torch.long, device=logits.device)  # (K,)
        if int(ids.max()) >= logits.shape[-1]:
            raise BadInput(f"logit_bias token {int(ids.max())} is outside the vocabulary [0, {logits.shape[-1]})")
        values = torch.tensor(list(bias.values()), dtype=logits.dtype, device=logits.device)  # (K,)
        return logits.index_add(-1, ids, values.expand(logits.shape[0], -1))
