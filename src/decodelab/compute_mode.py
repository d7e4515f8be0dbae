"""How a loaded model computes: its dtype, how its weights are held, whether its decode step is compiled.

A fast mode is never silent: `decodelab models`, traces, `/v1/models` and `/api/info` all show this record,
and `exact` says whether the numbers are the reference float32 ones (see README "Fast modes" for what each
mode changes, measured).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class ComputeMode:
    dtype: str  # "float32", "bfloat16", "float16": the activations' (and unquantized weights') dtype
    quantization: str  # "none", "int8" or "int4": how the projection weights are stored
    compiled: bool  # whether one-token decode steps run a torch.compile'd graph
    remote: str | None = None  # the engine of a model on another server ("vllm", ...): its numbers are its own

    @classmethod
    def of(cls, backend: object) -> ComputeMode:
        dtype = getattr(backend, "dtype", torch.float32)
        return cls(
            dtype=str(dtype).removeprefix("torch."),
            quantization=getattr(backend, "quantization", "none"),
            compiled=bool(getattr(backend, "compiled", False)),
            remote=getattr(backend, "engine", None) if getattr(backend, "partial_logits", False) else None,
        )

    @property
    def exact(self) -> bool:
        """float32 weights and activations, eager, here: the path parity tests hold bit for bit against
        transformers."""
        return self.dtype == "float32" and self.quantization == "none" and not self.compiled and self.remote is None

    @property
    def label(self) -> str:
        """'float32', 'float32, int4 weights, compiled', 'remote (vllm): its top logprobs', ..."""
        if self.remote is not None:
            return f"remote ({self.remote}): its top logprobs"
        parts = [self.dtype]
        if self.quantization != "none":
            parts.append(f"{self.quantization} weights")
        if self.compiled:
            parts.append("compiled")
        return ", ".join(parts)

    def to_dict(self) -> dict:
        values = {**asdict(self), "exact": self.exact, "label": self.label}
        if self.remote is None:
            del values["remote"]  # a model run here: the fields it always had
        return values
