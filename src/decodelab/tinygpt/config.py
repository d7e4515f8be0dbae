"""The tiny GPT's two configurations, each validated once: `TinyGPTConfig` (the model's shape, saved as the
checkpoint's `config.json`) and `TrainConfig` (how `train` runs, saved in `training.json`).

No torch here, so the CLI can show the defaults without importing it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from decodelab.errors import BadInput

MODEL_TYPE = "decodelab-tinygpt"  # the `model_type` in config.json that marks a tiny-GPT checkpoint


@dataclass(frozen=True)
class TinyGPTConfig:
    vocab_size: int = 256  # V: one token per byte value (see decodelab.tinygpt.tokenizer)
    block_size: int = 128  # context length: positions the learned position embedding covers
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block; must divide n_embd
    n_embd: int = 128  # C: width of the residual stream (head width is n_embd // n_head)
    dropout: float = 0.0  # dropout in training; 0 keeps a tiny CPU run simple and deterministic
    bias: bool = True  # biases in the Linear and LayerNorm layers, as in GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.n_embd % self.n_head:
            raise BadInput(f"n_embd must be a multiple of n_head, got n_embd={self.n_embd} and n_head={self.n_head}")
        if not 0.0 <= self.dropout < 1.0:
            raise BadInput(f"dropout must be in [0, 1), got {self.dropout!r}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    def to_json(self) -> dict:
        return {"model_type": MODEL_TYPE, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict) -> TinyGPTConfig:
        known = {field.name for field in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps in all (a resumed run continues up to this many)
    batch_size: int = 16  # windows per step; a step sees batch_size * block_size bytes
    learning_rate: float = 2e-3  # peak learning rate, reached after the warm-up
    min_learning_rate: float = 2e-4  # where the cosine decay ends, at `steps`
    lr_decay_steps: int | None = None  # where the cosine ends (None: at `steps`); set it to stop early and resume
    warmup_steps: int = 100  # linear warm-up from 0 (at most a tenth of the decay steps)
    weight_decay: float = 0.1  # AdamW decay on matrices and embeddings (not biases or LayerNorm)
    grad_clip: float = 1.0  # largest gradient norm; larger gradients are scaled down
    eval_interval: int = 250  # measure the validation loss and save a checkpoint every this many steps
    eval_windows: int = 256  # held-out windows (of block_size bytes) each validation loss is measured on
    seed: int = 1337  # seeds the initial weights, the batch order and dropout

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_interval", "eval_windows"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise BadInput(f"{name} must be a whole number of at least 1, got {value!r}")
        if self.lr_decay_steps is not None and (not isinstance(self.lr_decay_steps, int) or self.lr_decay_steps < 1):
            raise BadInput(f"lr_decay_steps must be None or a whole number of at least 1, got {self.lr_decay_steps!r}")
        if not self.learning_rate > 0:
            raise BadInput(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not 0 <= self.min_learning_rate <= self.learning_rate:
            raise BadInput(f"min_learning_rate must be in [0, learning_rate], got {self.min_learning_rate!r}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip <= 0:
            raise BadInput(
                "warmup_steps and weight_decay must be >= 0 and grad_clip > 0, got "
                f"{self.warmup_steps!r}, {self.weight_decay!r}, {self.grad_clip!r}"
            )

    def with_(self, **changes) -> TrainConfig:
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise BadInput(f"unknown training option {unknown[0]!r}: choose from {', '.join(sorted(known))}")
        return replace(self, **changes)
