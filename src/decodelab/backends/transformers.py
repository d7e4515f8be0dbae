"""Any transformers `AutoModelForCausalLM` behind the `Backend` contract."""

from __future__ import annotations

import inspect
from typing import Any

import torch


class TransformersBackend:
    """Wraps a loaded transformers causal LM; the cache is transformers' own `DynamicCache`."""

    def __init__(self, model: Any):
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

    def new_cache(self, batch_size: int) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: Any | None = None, *, last_only: bool = False) -> torch.Tensor:
        options: dict[str, Any] = {"use_cache": cache is not None}
        if cache is not None:
            options["past_key_values"] = cache  # the ids continue what it holds; advanced in place
        if last_only and self._keeps_logits:
            options["logits_to_keep"] = 1  # the model runs its head on the last position only
        logits = self.model(input_ids=input_ids, **options).logits  # (B, T, V), or (B, 1, V) when kept
        return (logits[:, -1:] if last_only else logits).float()
