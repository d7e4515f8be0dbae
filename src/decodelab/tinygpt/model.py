"""A tiny GPT written out in full, in the style of nanoGPT: the model the tutorials end by building by hand.

token ids (B, T) -> token embedding + learned position embedding -> n_layer pre-LayerNorm blocks
(x + attn(ln_1(x)), then x + mlp(ln_2(x)); attention is causal) -> final LayerNorm -> linear head -> logits (B, T, V).

`forward` takes an optional KV cache so the engine can decode one token at a time: the new tokens' keys and
values are appended to the cache and their queries attend over everything it holds. `embeddings` and
`attention_maps` return the intermediate tensors the inspection plots draw.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from decodelab.backends.kv_cache import CacheGroups, LayerKVCache
from decodelab.errors import BadInput
from decodelab.tinygpt.cache import KVCache
from decodelab.tinygpt.config import TinyGPTConfig


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position sees only itself and earlier positions."""

    def __init__(self, config: TinyGPTConfig, layer: int):
        super().__init__()
        self.layer = layer  # which cache slot holds this block's keys and values
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # heads back into the stream
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def split_heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values of x (B, T, C), each (B, H, T, D)."""
        batch, steps, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)  # (B, T, C) each
        return tuple(t.view(batch, steps, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))

    def forward(self, x: torch.Tensor, cache: LayerKVCache | CacheGroups | None = None) -> torch.Tensor:
        batch, steps, width = x.shape  # (B, T, C)
        q, k, v = self.split_heads(x)  # (B, H, T, D)
        dropout = self.dropout if self.training else 0.0
        if isinstance(cache, CacheGroups):  # rows of several caches (one new token each), each over its own
            y = cache.attend(self.layer, q, k, v, dropout_p=dropout)  # (B, H, 1, D)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(batch, steps, width)))
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(self.layer, k, v)  # (B, H, past+T, D): the cached positions, then these
        if past > 0 and steps > 1:
            # New tokens see the whole past and, among themselves, only earlier tokens.
            mask = torch.ones(steps, past + steps, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:
            # A single new token may see every cached position; without a past the plain causal mask applies.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, dropout_p=dropout)  # (B, H, T, D)
        y = y.transpose(1, 2).contiguous().view(batch, steps, width)  # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention pattern (B, H, T, T): row t is how position t spreads its attention over 0..t."""
        q, k, _ = self.split_heads(x)  # (B, H, T, D)
        steps = x.shape[1]
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])  # (B, H, T, T)
        future = torch.ones(steps, steps, dtype=torch.bool, device=x.device).triu(diagonal=1)
        return scores.masked_fill(future, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    """Position-wise feed-forward network: widen 4x, GELU, narrow back."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, 4C) inside, (B, T, C) out


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: TinyGPTConfig, layer: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: LayerKVCache | CacheGroups | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class TinyGPT(nn.Module):
    """The whole model; `forward(ids, cache)` gives logits (B, T, V) and advances the cache in place
    (`last_only=True`: the last position's logits (B, 1, V) alone)."""

    def __init__(self, config: TinyGPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding: one row per token id
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # position embedding: one row per position
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)  # residual stream -> logits
        self.apply(_init_weights)
        for name, parameter in self.named_parameters():
            if name.endswith("c_proj.weight"):
                # GPT-2: scale the projections into the residual stream so its variance does not grow with depth.
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def forward(
        self, input_ids: torch.Tensor, cache: LayerKVCache | None = None, *, last_only: bool = False
    ) -> torch.Tensor:
        past = cache.length if cache is not None else 0
        steps = input_ids.shape[1]
        if past + steps > self.config.block_size:
            raise BadInput(
                f"{past + steps} positions do not fit the tiny GPT's context of {self.config.block_size}: "
                "use a shorter text"
            )
        tok_emb, pos_emb = self.wte(input_ids), self.wpe.weight[past : past + steps]  # (B, T, C), (T, C)
        x = self.drop(tok_emb + pos_emb)  # (B, T, C)
        for block in self.h:
            x = block(x, cache)
        if cache is not None:
            cache.advance(steps)
        if last_only:
            x = x[:, -1:]  # (B, 1, C): a prefill needs only the last position's logits
        return self.lm_head(self.ln_f(x))  # (B, T, V), or (B, 1, V) with last_only

    def forward_groups(self, groups: list[tuple[torch.Tensor, LayerKVCache]]) -> list[torch.Tensor]:
        """One new token per row for several groups (tokens (B_i, 1), cache), each at its own cache's length:
        logits [(B_i, 1, V)]; the linears run over all rows at once, attention per cache (see `CacheGroups`)."""
        grouped = CacheGroups([cache for _, cache in groups], [tokens.shape[0] for tokens, _ in groups])
        tokens = torch.cat([tokens for tokens, _ in groups])  # (B, 1)
        positions = grouped.positions(tokens.device)  # (B,)
        if int(positions.max()) >= self.config.block_size:
            raise BadInput(f"a row is past the tiny GPT's context of {self.config.block_size}: use a shorter text")
        x = self.drop(self.wte(tokens) + self.wpe.weight[positions][:, None])  # (B, 1, C)
        for block in self.h:
            x = block(x, grouped)
        grouped.advance()
        return list(self.lm_head(self.ln_f(x)).split(grouped.sizes))  # [(B_i, 1, V)]

    def loss(self, input_ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy (nats per token) of predicting targets (B, T) from input_ids (B, T)."""
        logits = self(input_ids)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten())

    def new_cache(self, batch_size: int) -> KVCache:
        weight = self.wte.weight
        return KVCache(self.config, batch_size, weight.dtype, weight.device)

    def embeddings(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Token embeddings (B, T, C), position embeddings (T, C) and their sum (B, T, C): the first block's input."""
        tok_emb = self.wte(input_ids)  # (B, T, C)
        pos_emb = self.wpe.weight[: input_ids.shape[1]]  # (T, C)
        return tok_emb, pos_emb, tok_emb + pos_emb

    def attention_maps(self, input_ids: torch.Tensor) -> list[torch.Tensor]:
        """The attention pattern of every layer, each (B, H, T, T), for a prompt run through the model."""
        maps = []
        x = self.embeddings(input_ids)[2]  # (B, T, C)
        for block in cast("list[Block]", self.h):
            maps.append(block.attn.weights(block.ln_1(x)))
            x = block(x)
        return maps

    def parameter_count(self) -> int:
        return sum(parameter.numel() for parameter in self.parameters())


def _init_weights(module: nn.Module) -> None:
    """nanoGPT's initialisation: small normal weights, zero biases (LayerNorm keeps its ones and zeros)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
