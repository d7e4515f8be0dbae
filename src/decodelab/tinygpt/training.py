"""Training a tiny GPT on a text file: AdamW, warm-up then cosine learning rate, periodic validation loss,
atomic checkpoints, exact resume, and Ctrl-C that saves before it stops.

One step: cut a random batch of byte windows -> mean cross-entropy of each next byte -> backward -> clip the
gradient norm -> AdamW step at this step's learning rate. Every `eval_interval` steps (and at the end) the
validation loss is measured on fixed held-out windows and a checkpoint is written (see `checkpoint`).

A checkpoint carries the optimizer moments and both RNG states (batch sampling and torch's global RNG, which
dropout draws from), so N steps straight and N/2 steps + `resume` to N produce the same weights.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

import torch
import torch.nn.functional as F

from decodelab.errors import BadInput
from decodelab.tinygpt.checkpoint import (
    LOSS_CURVE_FILE,
    TRAINING_FILE,
    TRAINING_TENSORS_FILE,
    is_tinygpt_checkpoint,
    load_model,
    prepare_directory,
    read_training,
    recover_interrupted_save,
    write_atomically,
    write_model_files,
)
from decodelab.tinygpt.config import TinyGPTConfig, TrainConfig
from decodelab.tinygpt.corpus import DEFAULT_CORPUS, character_count, evaluation_windows, random_batch, read_corpus
from decodelab.tinygpt.model import TinyGPT
from decodelab.tinygpt.progress import ProgressBar


@dataclass
class TrainResult:
    directory: Path  # the checkpoint
    step: int  # steps done in all
    interrupted: bool  # stopped early by Ctrl-C (the checkpoint holds this step)
    seconds: float  # wall time of this run
    tokens_per_second: float  # training throughput of this run (time in steps, not validating or saving)
    train_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, nats/byte on its batch)
    val_losses: list[tuple[int, float, float]] = field(default_factory=list)  # (step, nats/byte, nats/char)

    @property
    def val_loss(self) -> float:
        """The last validation loss, nats per byte (= per token)."""
        return self.val_losses[-1][1]

    @property
    def val_nats_per_char(self) -> float:
        return self.val_losses[-1][2]


def learning_rate_at(step: int, config: TrainConfig) -> float:
    """Linear warm-up to the peak, then a cosine down to min_learning_rate at `lr_decay_steps` (default: `steps`),
    flat after that; `step` counts from 1."""
    horizon = config.lr_decay_steps or config.steps
    warmup = min(config.warmup_steps, horizon // 10)
    if step <= warmup:
        return config.learning_rate * step / warmup
    progress = min((step - warmup) / max(horizon - warmup, 1), 1.0)
    cosine = 0.5 * (1 + math.cos(math.pi * progress))  # 1 -> 0
    return config.min_learning_rate + cosine * (config.learning_rate - config.min_learning_rate)


@torch.no_grad()
def evaluate(model: TinyGPT, data: torch.Tensor, max_windows: int) -> tuple[float, float]:
    """Validation loss over fixed windows of `data`: (nats per byte, nats per character)."""
    inputs, targets = evaluation_windows(data, model.config.block_size, max_windows)  # (W, T) each
    was_training = model.training
    model.eval()
    total = 0.0
    for x, y in zip(inputs.split(64), targets.split(64)):
        logits = model(x)  # (w, T, V)
        total += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train(was_training)
    return total / targets.numel(), total / character_count(targets)


def train(
    out: str | os.PathLike,
    corpus: str | os.PathLike | None = None,
    model_config: TinyGPTConfig | None = None,
    config: TrainConfig | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: TextIO | bool = True,
    on_step: Callable[[int, float], None] | None = None,
    **options,
) -> TrainResult:
    """Train a tiny GPT on `corpus` (a UTF-8 file; None = the built-in pydoc text) into checkpoint `out`.

    `options` are TrainConfig fields applied on top of `config` (or, with `resume`, of the checkpoint's own
    training options). `resume` continues the checkpoint in `out` up to `steps`, with its corpus unless another
    is given; the learning rate follows the cosine that ends at `lr_decay_steps` (None: at `steps`), so raising
    `steps` alone on resume restarts the decay from higher up (a warm restart, noted on the progress stream).
    `overwrite` starts afresh in `out` even if it holds a checkpoint (replaced at the first save). Other files
    in `out` are never touched.
    `progress`: True draws the bar on stderr, False nothing, or give a stream. `on_step(step, loss)` is
    called after every step. Ctrl-C finishes the current step, saves, and returns with `interrupted=True`.
    """
    out = Path(out).expanduser()
    recover_interrupted_save(out)  # finish a save a crash interrupted, delete a killed one's leftovers
    with torch.random.fork_rng(devices=[]):  # the caller's global RNG is left as it was
        if resume:
            run = _Run.resumed(out, corpus, model_config, config, options)
        else:
            run = _Run.fresh(
                out, corpus, model_config or TinyGPTConfig(), (config or TrainConfig()).with_(**options), overwrite
            )
        prepare_directory(out)  # a bad --out fails now, not at the first save
        stream = sys.stderr if progress is True else progress or None
        return run.loop(stream, on_step)


class _Run:
    """Everything one training run holds; built fresh or from a checkpoint, then `loop` runs it."""

    def __init__(self, out: Path, model: TinyGPT, config: TrainConfig, corpus_name: str | None, state: dict):
        self.out, self.model, self.config = out, model.train(), config
        self.corpus = read_corpus(corpus_name if corpus_name != DEFAULT_CORPUS else None)
        self.train_data, self.val_data = self.corpus.split(model.config.block_size)
        self.optimizer = _make_optimizer(model, config)
        self.generator = torch.Generator()  # draws the batch offsets
        self.step = state.get("step", 0)
        self.train_losses = [tuple(row) for row in state.get("train_losses", [])]
        self.val_losses = [tuple(row) for row in state.get("val_losses", [])]
        self.seconds_before = state.get("seconds", 0.0)  # training time of earlier runs
        self.notes: list[str] = []  # said on the progress stream before the first step

    @classmethod
    def fresh(
        cls,
        out: Path,
        corpus: str | os.PathLike | None,
        model_config: TinyGPTConfig,
        config: TrainConfig,
        overwrite: bool,
    ) -> _Run:
        if is_tinygpt_checkpoint(out):
            if not overwrite:
                raise BadInput(
                    f"{str(out)!r} already holds a tiny-GPT checkpoint: pass --resume to continue it, "
                    "--overwrite to start again, or choose another --out"
                )
        elif out.exists() and not out.is_dir():
            raise BadInput(f"{str(out)!r} is a file: give a directory for --out")
        elif out.is_dir() and any(out.iterdir()):
            raise BadInput(f"{str(out)!r} exists and is not empty: choose a new --out directory")
        torch.manual_seed(config.seed)
        run = cls(out, TinyGPT(model_config), config, str(corpus) if corpus is not None else None, {})
        run.generator.manual_seed(config.seed)
        return run

    @classmethod
    def resumed(
        cls,
        out: Path,
        corpus: str | os.PathLike | None,
        model_config: TinyGPTConfig | None,
        config: TrainConfig | None,
        options: dict,
    ) -> _Run:
        if not is_tinygpt_checkpoint(out):
            raise BadInput(
                f"nothing to resume in {str(out)!r}: it holds no tiny-GPT checkpoint (train without --resume)"
            )
        model = load_model(out)
        if model_config is not None and model_config != model.config:
            raise BadInput(
                f"the checkpoint in {str(out)!r} is {_describe(model.config)}; a resumed run keeps its "
                "shape: leave out --layers/--heads/--dim/--block-size"
            )
        state, tensors = read_training(out)
        saved_config = TrainConfig(**state["config"])
        config = (config or saved_config).with_(**options)
        if config.steps <= state["step"]:
            raise BadInput(f"the checkpoint is already at step {state['step']}: pass --steps above it to train on")
        if corpus is None and state["corpus"] != DEFAULT_CORPUS and not Path(state["corpus"]).is_file():
            raise BadInput(
                f"the corpus this checkpoint was trained on, {state['corpus']!r} (from its {TRAINING_FILE}), "
                "is not there any more: pass --corpus FILE to resume on it where it is now"
            )
        run = cls(out, model, config, str(corpus) if corpus is not None else state["corpus"], state)
        run.notes += _schedule_change(saved_config, config, state["step"])
        _load_optimizer_state(run.optimizer, state["optimizer"], tensors)
        run.generator.set_state(tensors["rng.batches"])
        torch.set_rng_state(tensors["rng.torch"])
        return run

    def loop(self, progress: TextIO | None, on_step: Callable[[int, float], None] | None) -> TrainResult:
        config, model = self.config, self.model
        tokens_per_step = config.batch_size * model.config.block_size
        bar = ProgressBar(config.steps, self.step, progress)
        started, first_step, interrupted = time.perf_counter(), self.step, False
        stepping = 0.0  # seconds spent in training steps (not validating or saving): the tok/s measure
        with _interrupt_requests() as stop:
            for note in self.notes:
                bar.note(note)
            bar.note(
                f"training {_describe(model.config)} ({model.parameter_count():,} parameters) on "
                f"{self.corpus.name} ({len(self.train_data):,} train / {len(self.val_data):,} validation bytes) "
                f"from step {self.step} to {config.steps}"
            )
            while self.step < config.steps:
                step_started = time.perf_counter()
                loss = self._train_step()
                stepping += time.perf_counter() - step_started
                rate = (self.step - first_step) * tokens_per_step / max(stepping, 1e-9)
                left = (config.steps - self.step) * stepping / (self.step - first_step)
                bar.update(self.step, loss, rate, left)
                if on_step is not None:
                    on_step(self.step, loss)
                if stop.requested or self.step % config.eval_interval == 0 or self.step == config.steps:
                    self._validate(bar)
                    self.save(self.seconds_before + time.perf_counter() - started)
                if stop.requested:
                    interrupted = True
                    break
        bar.close()
        seconds = time.perf_counter() - started
        return TrainResult(
            self.out,
            self.step,
            interrupted,
            seconds,
            (self.step - first_step) * tokens_per_step / max(stepping, 1e-9),
            list(self.train_losses),
            list(self.val_losses),
        )

    def _train_step(self) -> float:
        self.step += 1
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(self.step, self.config)
        x, y = random_batch(self.train_data, self.config.batch_size, self.model.config.block_size, self.generator)
        loss = self.model.loss(x, y)  # mean nats per byte over the (B, T) targets
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        self.train_losses.append((self.step, loss.item()))
        return loss.item()

    def _validate(self, bar: ProgressBar) -> None:
        per_byte, per_char = evaluate(self.model, self.val_data, self.config.eval_windows)
        self.val_losses.append((self.step, per_byte, per_char))
        bar.note(f"step {self.step}: validation loss {per_byte:.4f} nats/byte, {per_char:.4f} nats/char")

    def save(self, seconds: float) -> None:
        """Write the checkpoint (weights, training state, loss curve) atomically into `out`."""
        optimizer_json, tensors = _optimizer_state(self.optimizer)
        tensors["rng.batches"] = self.generator.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        state = {
            "step": self.step,
            "config": asdict(self.config),
            "corpus": self.corpus.name,
            "seconds": seconds,
            "optimizer": optimizer_json,
            "train_losses": self.train_losses,
            "val_losses": self.val_losses,
        }

        def fill(directory: Path) -> None:
            from safetensors.torch import save_file

            from decodelab.tinygpt.plots import loss_curve_figure

            write_model_files(directory, self.model)
            (directory / TRAINING_FILE).write_text(json.dumps(state) + "\n")
            save_file(tensors, str(directory / TRAINING_TENSORS_FILE))
            loss_curve_figure(self.train_losses, self.val_losses).savefig(directory / LOSS_CURVE_FILE, dpi=100)

        write_atomically(self.out, fill)


def _make_optimizer(model: TinyGPT, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on 2-D tensors (matrices, embeddings) only, as in nanoGPT."""
    decayed = [p for p in model.parameters() if p.dim() >= 2]
    plain = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decayed, "weight_decay": config.weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95), foreach=True)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict, dict[str, torch.Tensor]]:
    """The optimizer's state as JSON (hyper-parameters) and named tensors (per-parameter moments)."""
    state = optimizer.state_dict()
    tensors = {
        f"optimizer.{index}.{name}": value.detach().clone().contiguous()
        for index, moments in state["state"].items()
        for name, value in moments.items()
    }
    return {"param_groups": state["param_groups"]}, tensors


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, tensors: dict[str, torch.Tensor]) -> None:
    moments: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".")
            moments.setdefault(int(index), {})[name] = value
    groups = [{**group, "betas": tuple(group["betas"])} for group in saved["param_groups"]]
    optimizer.load_state_dict({"state": moments, "param_groups": groups})


def _schedule_change(before: TrainConfig, after: TrainConfig, step: int) -> list[str]:
    """A note when a resumed run's learning rate does not continue the saved schedule (at the next step)."""
    old, new = learning_rate_at(step + 1, before), learning_rate_at(step + 1, after)
    if math.isclose(old, new, rel_tol=1e-9):
        return []
    old_end, new_end = before.lr_decay_steps or before.steps, after.lr_decay_steps or after.steps
    if old_end == new_end:
        return [
            f"note: step {step + 1} runs at learning rate {new:.3g}, not {old:.3g}: the learning-rate options changed"
        ]
    restart = " (a warm restart)" if new > old else ""
    return [
        f"note: the learning-rate cosine now ends at step {new_end}, not {old_end}, so step {step + 1} runs at "
        f"{new:.3g} instead of {old:.3g}{restart}: pass --lr-decay-steps {old_end} to keep the old schedule"
    ]


def _describe(config: TinyGPTConfig) -> str:
    return f"{config.n_layer} layers x {config.n_head} heads, width {config.n_embd}, context {config.block_size}"


@contextmanager
def _interrupt_requests() -> Iterator[_StopFlag]:
    """While training, the first Ctrl-C asks to stop after the current step; a second one stops at once."""
    flag = _StopFlag()
    try:
        previous = signal.signal(signal.SIGINT, flag.request)
    except ValueError:  # not the main thread: Ctrl-C cannot reach us here anyway
        yield flag
        return
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class _StopFlag:
    requested = False

    def request(self, signum: int, frame: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\nstopping after this step to save a checkpoint (Ctrl-C again to quit without saving)",
            file=sys.stderr,
            flush=True,
        )
