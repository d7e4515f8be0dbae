"""Any transformers `AutoModelForCausalLM` behind the `Backend` contract, its cache adapted to `Cache`."""

from __future__ import annotations

import copy
import inspect
from typing import TYPE_CHECKING, Any, cast

import torch

from decodelab.backends.base import Cache
from decodelab.errors import Unsupported

if TYPE_CHECKING:
    from transformers import DynamicCache, PreTrainedModel


class TransformersCache:
    """transformers' `DynamicCache` behind the `Cache` contract (its crop, reorder_cache and a deep copy)."""

    def __init__(self, cache: DynamicCache):
        self.cache = cache  # what the model reads and advances, as past_key_values

    @property
    def length(self) -> int:
        return self.cache.get_seq_length()

    def crop(self, length: int) -> None:
        # transformers 5 takes a negative count of positions to drop (a positive size is refused; 4.x took both).
        drop = self.length - length
        if drop > 0:
            self.cache.crop(-drop)

    def reorder(self, rows: torch.Tensor) -> None:
        self.cache.reorder_cache(cast(torch.LongTensor, rows))

    def fork(self) -> TransformersCache:
        return TransformersCache(copy.deepcopy(self.cache))


class TransformersBackend:
    """Wraps a loaded transformers causal LM; the cache is transformers' own `DynamicCache`, adapted."""

    def __init__(self, model: PreTrainedModel):
        self.model = model.eval()
        config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        self.vocab_size: int = model.get_output_embeddings().weight.shape[0]
        self.context_length: int = (
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        # transformers' causal LMs take `logits_to_keep`; for one that does not, last_only slices the full logits.
        self._keeps_logits: bool = "logits_to_keep" in inspect.signature(model.forward).parameters

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def new_cache(self, batch_size: int) -> TransformersCache:
        from transformers import DynamicCache

        return TransformersCache(DynamicCache(config=self.model.config))

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, last_only: bool = False) -> torch.Tensor:
        options: dict[str, Any] = {"use_cache": cache is not None}
        if cache is not None:
            if not isinstance(cache, TransformersCache):
                raise Unsupported(
                    f"the transformers backend runs on the cache its new_cache() makes, got a {type(cache).__name__}"
                )
            options["past_key_values"] = cache.cache  # the ids continue what it holds; advanced in place
        if last_only and self._keeps_logits:
            options["logits_to_keep"] = 1  # the model runs its head on the last position only
        logits = self.model(input_ids=input_ids, **options).logits  # (B, T, V), or (B, 1, V) when kept
        return (logits[:, -1:] if last_only else logits).float()
