"""decodelab's own Llama-family forward pass (SmolLM2, Llama 2/3 with plain RoPE), with a KV cache.

Written to mirror transformers' `LlamaForCausalLM` operation for operation, so its logits match
(tests assert allclose against transformers and equal greedy output). It exists because importing
transformers' model code costs ~3 s of a 3 s budget for a whole `decodelab next` run, and because a
small forward is easy to read and to trace.

A one-token decode step is ~75% matmul (reading the weights) and otherwise per-op dispatch overhead, so the
step trims overhead without changing a bit of the output: q/k/v and gate/up each run as one matmul over weights
stacked at load time (one ~0.1 s copy), RoPE cos/sin come from a cached table, the layers run in inference mode,
and submodules are called through `.forward`: ~35 -> ~29 ms a step for SmolLM2-135M on 2 CPU cores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import torch
import torch.nn.functional as F
from torch import nn

from decodelab.backends.base import Cache
from decodelab.backends.kv_cache import CacheGroups, LayerKVCache, StaticSlots, layer_cache
from decodelab.backends.quantized import QUANTIZATIONS, DenseProjection, Int8Projection, projection
from decodelab.errors import DecodelabError

if TYPE_CHECKING:
    from decodelab.backends.compiled_step import CompiledDecodeStep


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


class KVCache(LayerKVCache):
    """Keys and values of every layer for the positions seen so far; grows in chunks, updated in place.

    Its buffers are always inference tensors (made, grown, reordered and forked inside
    `torch.inference_mode()`): the layers write them in inference mode, and the compiled decode step is traced
    for one kind of tensor. Copy, fork, `reorder` and `crop` them freely; write into them only in inference mode.
    """

    _GROWTH = 256  # positions added whenever the buffers fill up

    def __init__(self, config: LlamaConfig, batch_size: int, dtype: torch.dtype, device: torch.device):
        shape = (batch_size, config.num_kv_heads, 0, config.head_dim)  # (B, Hkv, capacity, D)
        with torch.inference_mode():
            super().__init__(
                [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)],
                [torch.empty(shape, dtype=dtype, device=device) for _ in range(config.num_layers)],
            )

    def reorder(self, rows: torch.Tensor) -> None:
        with torch.inference_mode():
            super().reorder(rows)

    def fork(self) -> Self:
        with torch.inference_mode():
            return super().fork()

    def reserve(self, needed: int) -> None:
        with torch.inference_mode():
            super().reserve(needed)

    def take_row(self, other: LayerKVCache, row: int, length: int) -> None:
        with torch.inference_mode():
            super().take_row(other, row, length)

    def _make_room(self, layer: int, needed: int) -> None:
        if needed <= self.keys[layer].shape[2]:
            return
        capacity = (needed + self._GROWTH - 1) // self._GROWTH * self._GROWTH
        for buffers in (self.keys, self.values):
            old = buffers[layer]
            # Zeros, not garbage: the compiled step attends over unwritten positions (masked), and 0 x NaN is NaN.
            grown = old.new_zeros((*old.shape[:2], capacity, old.shape[3]))
            grown[:, :, : self.length] = old[:, :, : self.length]
            buffers[layer] = grown


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()  # no copy when x already is float32
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def rope_inverse_frequencies(config: LlamaConfig) -> torch.Tensor:
    """(D/2,) float32 rotation speeds of the RoPE dimension pairs."""
    exponents = torch.arange(0, config.head_dim, 2, dtype=torch.float) / config.head_dim
    return 1.0 / (config.rope_theta**exponents)


def rotary_tables(inv_freq: torch.Tensor, positions: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin, each (P, 1, D), of positions [0, P): rows equal what transformers computes per step.

    transformers rotates with `x * cos + rotate_half(x) * sin`, where rotate_half(x) = cat(-x2, x1). Since the
    two halves of `sin` are equal, rotate_half(x) * sin == cat(x2, x1) * cat(-sin1, sin2), bit for bit (negation
    is exact), so the sign is folded into the table and the step only swaps halves.
    """
    steps = torch.arange(positions, device=inv_freq.device, dtype=torch.float)  # (P,)
    freqs = steps[:, None] * inv_freq[None, :]  # (P, D/2)
    angles = torch.cat((freqs, freqs), dim=-1)  # (P, D)
    cos, sin = angles.cos(), angles.sin()
    half = sin.shape[-1] // 2
    signed_sin = torch.cat((-sin[:, :half], sin[:, half:]), dim=-1)
    return cos.to(dtype)[:, None], signed_sin.to(dtype)[:, None]


class Attention(nn.Module):
    """Grouped-query attention with RoPE; q, k and v come out of one matmul over their stacked weights."""

    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.layer = layer
        self.head_dim = config.head_dim
        self.heads = (config.num_heads, config.num_kv_heads)  # H, Hkv
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * config.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, config.num_kv_heads * config.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * config.head_dim, config.hidden_size, bias=False)
        # The projections forward runs, built from the checkpoint's linears by NativeLlama.build_projections:
        self.qkv: nn.Module  # (B, T, C) -> (B, T, H*D + 2*Hkv*D), q, k and v stacked
        self.out: nn.Module  # (B, T, H*D) -> (B, T, C), o_proj

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerKVCache | StaticSlots | CacheGroups | None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """cos, sin: (T, 1, D), or (B, 1, 1, D) for CacheGroups' rows at their own positions.
        `mask` (T, S) says which cached positions each new one sees; None: all the past, causal among the new."""
        batch, steps, _ = x.shape  # (B, T, C)
        heads, kv_heads = self.heads
        qkv = self.qkv.forward(x).view(batch, steps, -1, self.head_dim)  # (B, T, H+2Hkv, D)
        qk, v = qkv.split((heads + kv_heads, kv_heads), dim=2)
        # Rotary positions for q and k at once: x * cos + swap_halves(x) * signed sin; cos, sin are (T, 1, D).
        qk = qk * cos + qk.roll(self.head_dim // 2, dims=-1) * sin
        q, k = qk.transpose(1, 2).split((heads, kv_heads), dim=1)  # (B, H, T, D), (B, Hkv, T, D)
        v = v.transpose(1, 2)  # (B, Hkv, T, D)
        if isinstance(cache, CacheGroups):  # rows of several caches, each attending over its own
            out = cache.attend(self.layer, q, k, v, enable_gqa=True).transpose(1, 2).reshape(batch, steps, -1)
            return self.out.forward(out)
        past = 0
        if cache is not None:
            past = cache.length if isinstance(cache, LayerKVCache) else 0
            k, v = cache.append(self.layer, k, v)  # (B, Hkv, past+T, D)
        if mask is not None:  # the compiled step: a fixed-size cache, positions past the end masked
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        elif steps > 1 and past > 0:
            # New tokens see the whole past and, among themselves, only earlier tokens.
            mask = torch.ones(steps, past + steps, dtype=torch.bool, device=x.device).tril(diagonal=past)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=steps > 1, enable_gqa=True)
        out = out.transpose(1, 2).reshape(batch, steps, -1)  # (B, T, H*D)
        return self.out.forward(out)


class MLP(nn.Module):
    """SiLU-gated MLP; gate and up come out of one matmul over their stacked weights."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        # Built by NativeLlama.build_projections, as in Attention:
        self.gate_up: nn.Module  # (B, T, C) -> (B, T, 2*I), gate and up stacked
        self.down: nn.Module  # (B, T, I) -> (B, T, C), down_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up.forward(x).chunk(2, dim=-1)  # (B, T, I) each
        return self.down.forward(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        cache: LayerKVCache | StaticSlots | CacheGroups | None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        # Submodules are called through .forward: nn.Module.__call__ adds ~1 us each, and a step made ~330 calls.
        x = x + self.self_attn.forward(self.input_layernorm.forward(x), cos, sin, cache, mask)
        return x + self.mlp.forward(self.post_attention_layernorm.forward(x))


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
        self.head: DenseProjection | Int8Projection  # (B, T, C) -> (B, T, V), built with the other projections
        self.quantization = "none"  # one of QUANTIZATIONS: how the projections hold their weights
        self._built = False  # whether build_projections has run
        self._compiled: CompiledDecodeStep | None = None  # set by compile_decode_step()
        # Plain attributes, not buffers: they stay float32 whatever dtype the weights are cast to.
        self.inv_freq = rope_inverse_frequencies(config)
        self._rotary_key: tuple[int, torch.dtype, torch.device] | None = None  # what the cos/sin tables cover
        self._cos = self._sin = torch.empty(0)  # (P, 1, D) each, once built

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.norm.weight.device

    @property
    def compiled(self) -> bool:
        """Whether one-token steps run the compiled decode step (see `compile_decode_step`)."""
        return self._compiled is not None

    def new_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size, self.dtype, self.device)

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, cache: Cache | None = None, *, last_only: bool = False) -> torch.Tensor:
        cache = layer_cache(cache, "native Llama")
        if not self._built:
            self.build_projections(self.quantization)
        steps = input_ids.shape[1]
        if self._compiled is not None and cache is not None and steps == 1:
            return self._compiled.step(input_ids, cast("KVCache", cache))
        past = cache.length if cache is not None else 0
        cos, sin = self._rotary(past + steps)
        with torch.inference_mode():  # lighter dispatch than no_grad (see KVCache for what that implies)
            cos, sin = cos[past : past + steps], sin[past : past + steps]  # (T, 1, D)
            x = self.embed(input_ids)  # (B, T, C)
            for block in self.layers:
                x = block.forward(x, cos, sin, cache)
            if last_only:
                x = x[:, -1:]  # (B, 1, C): norm and head run on the last position alone
        if cache is not None:
            cache.advance(steps)
        # The head runs outside inference mode: callers get ordinary tensors they may change in place.
        return self.head.forward(self.norm.forward(x)).float()  # (B, T or 1, V)

    @torch.no_grad()
    def forward_groups(self, groups: Sequence[tuple[torch.Tensor, Cache]]) -> list[torch.Tensor]:
        """One new token per row for several groups of rows, each group (tokens (B_i, 1), cache) continuing its own
        cache at its own length: logits [(B_i, 1, V)]. The projections and the head run once over all rows (the
        weights are read once); attention runs per cache (`CacheGroups`). Each group's logits equal its own
        `forward` up to the matmuls' summation order at another batch size (~1e-6)."""
        caches = [cast("LayerKVCache", layer_cache(cache, "native Llama")) for _, cache in groups]
        if not self._built:
            self.build_projections(self.quantization)
        grouped = CacheGroups(caches, [tokens.shape[0] for tokens, _ in groups])
        tokens = torch.cat([tokens for tokens, _ in groups])  # (B, 1)
        positions = grouped.positions(tokens.device)  # (B,)
        cos, sin = self._rotary(int(positions.max()) + 1)
        with torch.inference_mode():
            cos, sin = cos[positions][:, None], sin[positions][:, None]  # (B, 1, 1, D)
            x = self.embed(tokens)  # (B, 1, C)
            for block in self.layers:
                x = block.forward(x, cos, sin, grouped)
        grouped.advance()
        logits = self.head.forward(self.norm.forward(x)).float()  # (B, 1, V)
        return list(logits.split(grouped.sizes))

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C) embeddings; a quantized tied head is read back (the float table is freed)."""
        if self.config.tie_word_embeddings and self.quantization != "none":
            return self.head.row(input_ids).to(self.dtype)
        return F.embedding(input_ids, self.embed_tokens.weight)

    def _rotary(self, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed-sin tables covering at least `positions`; rebuilt, twice as long, when outgrown."""
        covered, dtype, device = self._rotary_key or (0, None, None)
        if positions > covered or dtype != self.dtype or device != self.inv_freq.device:  # outgrown or moved
            covered = max(positions, 2 * covered, 256)
            self._cos, self._sin = rotary_tables(self.inv_freq, covered, self.dtype)
            self._rotary_key = (covered, self.dtype, self.inv_freq.device)
        return self._cos, self._sin

    @classmethod
    def from_directory(cls, directory: Path, dtype: torch.dtype = torch.float32, device: str = "cpu") -> NativeLlama:
        """Build from a transformers-style directory: config.json + model.safetensors."""
        from safetensors.torch import load_file

        config = LlamaConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
        with _without_weight_init():
            model = cls(config)
        checkpoint = load_file(directory / "model.safetensors")
        weights = {name.removeprefix("model."): tensor.to(device, dtype) for name, tensor in checkpoint.items()}
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
        del checkpoint, weights  # the stacks replace the q/k/v and gate/up tensors, which can then be freed
        model.build_projections()
        model.inv_freq = model.inv_freq.to(device)
        return model.eval()

    def quantize(self, mode: str) -> None:
        """Hold the projections' weights as `mode` (one of QUANTIZATIONS) from now on; "none" is the exact path."""
        if mode not in QUANTIZATIONS:
            raise DecodelabError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {mode!r}")
        if self._compiled is not None:
            raise DecodelabError(
                "quantize before compile_decode_step(): the compiled step was traced with the old weights"
            )
        self.build_projections(mode)

    def build_projections(self, quantize: str = "none") -> None:
        """Make the projections forward runs from the checkpoint's linears (the first forward does it; call it
        again after replacing weight tensors). q/k/v and gate/up are stacked so each pair or triple is one
        matmul. With `quantize` "int8" or "int4" the float weights are replaced by quantized ones and freed;
        such a model cannot go back to "none"."""
        if self.quantization != "none" and quantize != self.quantization:
            raise DecodelabError(f"this model is already quantized to {self.quantization}; load it again instead")
        for block in cast("list[Block]", self.layers):
            attn, mlp = block.self_attn, block.mlp
            attn.qkv = projection(_stack_weights(attn.q_proj, attn.k_proj, attn.v_proj), quantize)
            attn.out = projection(attn.o_proj.weight.detach(), quantize)
            mlp.gate_up = projection(_stack_weights(mlp.gate_proj, mlp.up_proj), quantize)
            mlp.down = projection(mlp.down_proj.weight.detach(), quantize)
        # The head is int8 in both modes: measured alone on the bundled model (100 steps), an int8 head keeps
        # 99% of top-1 choices (mean KL 1e-3), a 4-bit one 91% (KL 3e-2).
        head_weight = self.lm_head.weight.detach()
        self.head = Int8Projection(head_weight) if quantize != "none" else DenseProjection(head_weight)
        if quantize != "none":
            self._free_float_weights()
        self.quantization = quantize
        self._built = True

    def _free_float_weights(self) -> None:
        """Drop the float copies the quantized projections replace (the tied embedding too: `embed` reads the
        head back); norms stay float."""
        empty = torch.empty(0, dtype=self.dtype, device=self.device)
        for linear in [module for module in self.modules() if isinstance(module, nn.Linear)]:
            linear.weight = nn.Parameter(empty, requires_grad=False)
        if self.config.tie_word_embeddings:
            self.embed_tokens.weight = nn.Parameter(empty, requires_grad=False)
        # What stays float (norms, an untied embedding) may be views of model.safetensors, which safetensors
        # maps: one view keeps the whole file's pages resident (513 MiB for the bundled model; bench/load.py).
        # Copies let the mapping go.
        for module in self.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                if param.numel():
                    setattr(module, name, nn.Parameter(param.detach().clone(), requires_grad=False))

    def compile_decode_step(self, **inductor_options: Any) -> float:
        """Run one-token steps through a `torch.compile`d decode step from now on; returns the seconds the first
        compilation took (it happens here, on a throwaway cache). See `decodelab.backends.compiled_step`."""
        from decodelab.backends.compiled_step import CompiledDecodeStep

        if not self._built:
            self.build_projections(self.quantization)
        self._compiled = CompiledDecodeStep(self, **inductor_options)
        return self._compiled.warm_up()


def _stack_weights(*linears: nn.Linear) -> torch.Tensor:
    """Concatenate the linears' (out, in) weights into one (sum of outs, in) matrix, then make each weight a view.

    One matmul over the stack gives bit-identical outputs to the separate ones, with fewer dispatches, and the
    views keep the checkpoint names (q_proj.weight, ...) loading and saving as before without a second copy.
    """
    stacked = torch.cat([linear.weight.detach() for linear in linears])
    rows = 0
    for linear in linears:
        width = linear.weight.shape[0]
        linear.weight = nn.Parameter(stacked[rows : rows + width], requires_grad=linear.weight.requires_grad)
        rows += width
    return stacked


@contextmanager
def _without_weight_init():
    """Skip random initialisation of parameters the checkpoint is about to overwrite (saves ~1 s)."""
    saved = nn.Linear.reset_parameters, nn.Embedding.reset_parameters
    nn.Linear.reset_parameters = nn.Embedding.reset_parameters = lambda self: None  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        nn.Linear.reset_parameters, nn.Embedding.reset_parameters = saved  # type: ignore[method-assign]
