"""Any transformers `AutoModelForCausalLM` behind the `Backend` contract."""

from __future__ import annotations

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
    def forward(self, input_ids: torch.Tensor, cache: Any | None = None) -> torch.Tensor:
        if cache is None:
            return self.model(input_ids=input_ids, use_cache=False).logits.float()  # (B, T, V)
        return self.model(input_ids=input_ids, past_key_values=cache, use_cache=True).logits.float()
