"""Weight-only quantized projections for the native Llama: `x @ W.T` with W stored as int8 or int4.

A one-token decode step reads every weight once, so its time is the bytes of the weights: 4 per number in
float32, 1 in int8, about 0.6 in int4 with its scales. Both modes use the matmul kernels torch ships for the
CPU, which dequantize inside the kernel, on bfloat16 inputs (see MATMUL_DTYPE); everything between the
products stays in the model's dtype:

- int8: one scale per output row (per channel), symmetric: w = q * scale, q in [-127, 127];
  `torch.ops.aten._weight_int8pack_mm`.
- int4: one scale and one offset per group of `INT4_GROUP` inputs of a row: w = (q - 8) * scale + zero,
  q in [0, 15]; `torch.ops.aten._weight_int4pack_mm_for_cpu`. That is GGUF's Q4_1 block (32 numbers,
  w = d * q + m) in another spelling (scale = d, zero = m + 8d), so the int4 mode of a model converted from
  a Q4_1 GGUF, as the bundled one is, finds the file's own 4-bit numbers again; only the scales and offsets
  are rounded, to bfloat16 as the kernel takes them (the fidelity table in the README shows what is left).

Why these kernels and not the GGUF's blocks read directly: torch has no kernel for ggml's block layouts, and
these two run inside `torch.compile`d graphs, on any model the native backend loads, not only GGUF ones.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTIZATIONS = ("none", "int8", "int4")  # what `decodelab.load(quantize=...)` accepts
INT4_GROUP = 32  # inputs per int4 scale/offset pair: GGUF's Q4_1 block size
# What the quantized kernels multiply in: with float32 inputs torch's CPU kernels take a scalar path ~10x slower
# than with bfloat16 ones (measured on the bundled model's shapes), so each product rounds its input to
# bfloat16 and its output back; norms, attention, residuals and softmax stay in the model's dtype.
MATMUL_DTYPE = torch.bfloat16
# Rows (batch x positions) up to which a float product runs as (W @ x.T).T: for 2..32 rows torch's CPU GEMM of
# x @ W.T repacks W first and takes 2-4x as long as one row (the LM head: 13 ms for 1 row, 41 ms for 4); with W as
# the left operand it streams W once, as for one row (11 ms for 4). One row and a prefill's many keep F.linear.
FEW_ROWS = 32
_INT4_INNER_K_TILES = 1  # packing layout argument of the CPU int4 kernel (it ignores values other than 1..8)


class DenseProjection(nn.Module):
    """`x @ W.T` in the weight's dtype: the exact path."""

    def __init__(self, weight: torch.Tensor):  # (N, K)
        super().__init__()
        self.register_buffer("weight", weight, persistent=False)
        self.out_features = weight.shape[0]

    weight: torch.Tensor  # (N, K), registered above

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        rows = x.numel() // x.shape[-1]
        if 1 < rows <= FEW_ROWS:  # a batched decode step: see FEW_ROWS
            flat = x.reshape(rows, x.shape[-1])  # (R, K)
            return (self.weight @ flat.T).T.contiguous().view(*x.shape[:-1], self.out_features)
        return nn.functional.linear(x, self.weight)

    def row(self, ids: torch.Tensor) -> torch.Tensor:
        """Rows `ids` of W (an embedding lookup when W is a tied embedding): (...,) -> (..., K)."""
        return nn.functional.embedding(ids, self.weight)


class Int8Projection(nn.Module):
    """`x @ W.T` with W as int8 (N, K) and a float scale per row (N,)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127  # (N,)
        self.register_buffer("quantized", (weight / scale[:, None]).round().clamp(-127, 127).to(torch.int8), False)
        self.register_buffer("scale", scale.to(MATMUL_DTYPE), persistent=False)  # (N,)
        self.register_buffer("row_scale", scale, persistent=False)  # (N,) float32, for `row`
        self.out_features = weight.shape[0]

    quantized: torch.Tensor
    scale: torch.Tensor
    row_scale: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        flat = x.reshape(-1, x.shape[-1]).to(MATMUL_DTYPE)  # (M, K)
        out = torch.ops.aten._weight_int8pack_mm(flat, self.quantized, self.scale)  # (M, N)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)

    def row(self, ids: torch.Tensor) -> torch.Tensor:  # (...,) -> (..., K) float32
        return nn.functional.embedding(ids, self.quantized).float() * self.row_scale[ids][..., None]


class Int4Projection(nn.Module):
    """`x @ W.T` with W as packed int4 and a (scale, zero) pair per group of INT4_GROUP inputs of each row."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        rows, width = weight.shape  # (N, K)
        if width % INT4_GROUP:
            raise ValueError(f"int4 needs a width divisible by {INT4_GROUP}, got a ({rows}, {width}) weight")
        groups = weight.detach().float().view(rows, width // INT4_GROUP, INT4_GROUP)  # (N, G, 32)
        low, high = groups.amin(dim=-1), groups.amax(dim=-1)  # (N, G)
        # Q4_1's grid: the group's minimum is level 0 and its maximum level 15.
        scale = ((high - low) / 15).clamp(min=1e-12)
        levels = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels.view(rows, width), _INT4_INNER_K_TILES)
        zero = low + 8 * scale  # so that (q - 8) * scale + zero == low + q * scale
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()  # (G, N, 2)
        self.register_buffer("packed", packed, persistent=False)  # (N, K/2) uint8
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(MATMUL_DTYPE), persistent=False)
        self.out_features = rows

    packed: torch.Tensor
    scales_and_zeros: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., K) -> (..., N)
        flat = x.reshape(-1, x.shape[-1]).to(MATMUL_DTYPE)  # (M, K)
        out = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.packed, INT4_GROUP, self.scales_and_zeros)
        return out.view(*x.shape[:-1], self.out_features).to(x.dtype)


def projection(weight: torch.Tensor, quantize: str) -> nn.Module:
    """The projection by `weight` (N, K) in mode `quantize` (one of QUANTIZATIONS)."""
    if quantize == "int8":
        return Int8Projection(weight)
    if quantize == "int4":
        return Int4Projection(weight)
    return DenseProjection(weight)
