"""decodelab's own Llama-family forward pass (SmolLM2, Llama 2/3 with plain RoPE), with a KV cache.

Written to mirror transformers' `LlamaForCausalLM` operation for operation, so its logits match
(tests assert allclose against transformers and equal greedy output). It exists because importing
transformers' model code costs ~3 s of a 3 s budget for a whole `decodelab next` run, and because a
small forward is easy to read and to trace.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from decodelab.errors import DecodelabError


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int  # V, rows of the embedding and the LM head
    hidden_size: int  # C, width of the residual stream
    intermediate_size: int  # width of the gated MLP
    num_layers: int  # transformer blocks
    num_heads: int  # query heads H
    num_kv_heads: int  # key/value heads Hkv (grouped-query attention when < H)
    head_dim: int  # D, per-head width
    rms_norm_eps: float  # epsilon inside RMSNorm
    rope_theta: float  # RoPE base frequency
    max_position_embeddings: int  # context length
    tie_word_embeddings: bool  # LM head shares the embedding matrix

    @classmethod
    def from_hf_config(cls, config: dict) -> LlamaConfig:
        """Read a transformers `config.json`; refuse what this implementation does not compute."""
        if config.get("model_type") != "llama":
            raise DecodelabError(f"native backend supports model_type 'llama', got {config.get('model_type')!r}")
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise DecodelabError(f"native backend supports plain RoPE only, got rope_type {rope_type!r}")
        if config.get("attention_bias") or config.get("mlp_bias") or config.get("hidden_act", "silu") != "silu":
            raise DecodelabError("native backend supports bias-free SiLU Llama blocks only")
        heads = config["num_attention_heads"]
        return cls(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=config.get("num_key_value_heads") or heads,
            head_dim=config.get("head_dim") or config["hidden_size"] // heads,
            rms_norm_eps=config["rms_norm_eps"],
            rope_theta=rope.get("rope_theta", config.get("rope_theta", 10000.0)),
            max_position_embeddings=config["max_position_embeddings"],
            tie_word_embeddings=config.get("tie_word_embeddings", False),
        )


class KVCache:
    """Keys and values of every layer for the positions seen so far; grows in chunks, updated in place."""

    _GROWTH = 256  # positions added whenever the buffers fill up

    def __init__(self, config: LlamaConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        self.length = 0  # positions filled
        self._shape = (batch_size, config.num_kv_heads, 0, config.head_dim)  # (B, Hkv, capacity, D)
        self.keys = [torch.empty(self._shape, dtype=dtype, device=device) for _ in range(config.num_layers)]
        self.values = [torch.empty(self._shape, dtype=dtype, device=device) for _ in range(config.num_layers)]

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, Hkv, T, D) new keys/values at positions [length, length+T); return all so far."""
        start, new = self.length, k.shape[2]
        if start + new > self.keys[layer].shape[2]:
            self._grow(layer, start + new)
        self.keys[layer][:, :, start : start + new] = k
        self.values[layer][:, :, start : start + new] = v
        return self.keys[layer][:, :, : start + new], self.values[layer][:, :, : start + new]

    def advance(self, new_positions: int) -> None:
        self.length += new_positions

    def crop(self, length: int) -> None:
        """Forget positions from `length` on (undo); the buffers keep their size and are overwritten later."""
        self.length = min(self.length, length)

    def reorder(self, rows: torch.Tensor) -> None:
        """Keep batch rows `rows` (e.g. surviving beams), in that order."""
        self.keys = [k.index_select(0, rows) for k in self.keys]
        self.values = [v.index_select(0, rows) for v in self.values]

    def _grow(self, layer: int, needed: int) -> None:
        capacity = (needed + self._GROWTH - 1) // self._GROWTH * self._GROWTH
        for buffers in (self.keys, self.values):
            old = buffers[layer]
            grown = old.new_empty((*old.shape[:2], capacity, old.shape[3]))
            grown[:, :, : self.length] = old[:, :, : self.length]
            buffers[layer] = grown


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """(D/2,) float32 rotation speeds of the RoPE dimension pairs."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float) / config.head_dim
    return 1.0 / (config.rope_theta**exponents)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.head_dim = config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        batch, steps, _ = x.shape  # (B, T, C)
        split = (batch, steps, -1, self.head_dim)
        q = self.q_proj(x).view(split).transpose(1, 2)  # (B, H, T, D)
        k = self.k_proj(x).view(split).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(split).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin  # rotary positions
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(self.layer, k, v)  # (B, Hkv, past+T, D)
        if steps > 1 and past > 0:
            # New tokens see the whole past and, among themselves, only earlier tokens.
            mask = torch.ones(steps, past + steps, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, enable_gqa=True)
        out = out.transpose(1, 2).reshape(batch, steps, -1)  # (B, T, H*D)
        return self.o_proj(out)


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class NativeLlama(nn.Module):
    """A Llama causal LM meeting the `Backend` contract; parameter names follow transformers' checkpoints."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.context_length = config.max_position_embeddings
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, layer) for layer in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        # A plain attribute, not a buffer: it stays float32 whatever dtype the weights are cast to.
        self.inv_freq = rope_inverse_frequencies(config)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, self.dtype, self.device)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        past = cache.length if cache is not None else 0
        steps = input_ids.shape[1]
        positions = torch.arange(past, past + steps, device=input_ids.device, dtype=torch.float)
        freqs = positions[:, None] * self.inv_freq[None, :]  # (T, D/2)
        angles = torch.cat((freqs, freqs), dim=-1)  # (T, D)
        cos, sin = angles.cos().to(self.dtype), angles.sin().to(self.dtype)
        x = self.embed_tokens(input_ids)  # (B, T, C)
        for block in self.layers:
            x = block(x, cos, sin, cache)
        if cache is not None:
            cache.advance(steps)
        return self.lm_head(self.norm(x)).float()  # (B, T, V)

    @classmethod
    def from_directory(cls, directory: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> NativeLlama:
        """Build from a transformers-style directory: config.json + model.safetensors."""
        from safetensors.torch import load_file

        config = LlamaConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
        with _without_weight_init():
            model = cls(config)
        checkpoint = load_file(directory / "model.safetensors")
        weights = {name.removeprefix("model."): tensor for name, tensor in checkpoint.items()}
        if config.tie_word_embeddings:
            weights.pop("lm_head.weight", None)
        model.load_state_dict(weights, strict=False, assign=True)
        if config.tie_word_embeddings:
            model.lm_head.weight = model.embed_tokens.weight
        missing = sorted(set(model.state_dict()) - set(weights) - {"lm_head.weight"})
        if missing:
            raise DecodelabError(
                f"{directory / 'model.safetensors'} lacks weights {missing[:3]}: the model directory is incomplete"
            )
        model = model.to(device=device, dtype=dtype).eval()
        model.inv_freq = model.inv_freq.to(device)
        return model


@contextmanager
def _without_weight_init():
    """Skip random initialisation of parameters the checkpoint is about to overwrite (saves ~1 s)."""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved
