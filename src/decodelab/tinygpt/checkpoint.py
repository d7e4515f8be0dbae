"""Tiny-GPT checkpoints: a directory that `decodelab.load` (and so every `--model DIR`) reads like any model.

    config.json            TinyGPTConfig with "model_type": "decodelab-tinygpt" (how a checkpoint is recognised)
    model.safetensors      the weights
    tokenizer.json         the byte tokenizer
    training.json          step, losses, training options, corpus (checkpoints written by `train`)
    training.safetensors   optimizer moments and RNG states, so `--resume` continues exactly
    loss.png               the loss curve

A save is atomic: the files are written into a temporary sibling directory, which then replaces the old one by
two renames (old -> `.NAME.previous`, new -> NAME). A reader sees the old checkpoint or the new one, never a mix;
a crash between the renames leaves `.NAME.previous`, which `recover_interrupted_save` puts back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from decodelab.errors import BadInput, ModelNotFound
from decodelab.tinygpt.config import MODEL_TYPE, TinyGPTConfig
from decodelab.tinygpt.model import TinyGPT
from decodelab.tinygpt.tokenizer import byte_tokenizer, save_byte_tokenizer

if TYPE_CHECKING:
    from decodelab.model import LM

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
TRAINING_TENSORS_FILE = "training.safetensors"


def is_tinygpt_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a tiny-GPT checkpoint (its config.json names our model type)."""
    config = Path(directory) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (ValueError, AttributeError):
        return False


def write_model_files(directory: Path, model: TinyGPT) -> None:
    """config.json, model.safetensors and tokenizer.json of `model` into `directory`."""
    from safetensors.torch import save_file

    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_json(), indent=2) + "\n")
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    save_byte_tokenizer(directory)


def save_model(model: TinyGPT, directory: str | os.PathLike) -> Path:
    """Save a tiny GPT (trained or not) as a loadable checkpoint directory, atomically; return its path."""
    target = Path(directory).expanduser()
    write_atomically(target, lambda partial: write_model_files(partial, model))
    return target


def write_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a temporary sibling of `target`, then swap it in; `target` must be new, empty or a checkpoint."""
    if target.is_dir() and any(target.iterdir()) and not is_tinygpt_checkpoint(target):
        raise BadInput(f"{str(target)!r} is a directory that is not a tiny-GPT checkpoint: choose a new directory")
    if target.exists() and not target.is_dir():
        raise BadInput(f"{str(target)!r} is a file: give a directory for the checkpoint")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    previous = target.parent / f".{target.name}.previous"
    try:
        fill(partial)
        if target.exists():
            shutil.rmtree(previous, ignore_errors=True)
            os.rename(target, previous)
        os.rename(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)


def recover_interrupted_save(target: Path) -> None:
    """Put back the previous checkpoint if a save died between its two renames."""
    previous = target.parent / f".{target.name}.previous"
    if not target.exists() and is_tinygpt_checkpoint(previous):
        os.rename(previous, target)


def read_config(directory: Path) -> TinyGPTConfig:
    if not is_tinygpt_checkpoint(directory):
        raise ModelNotFound(f"{str(directory)!r} is not a tiny-GPT checkpoint (no config.json with model_type {MODEL_TYPE!r})")
    return TinyGPTConfig.from_json(json.loads((directory / CONFIG_FILE).read_text()))


def load_model(directory: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str = "cpu") -> TinyGPT:
    """The TinyGPT saved in `directory`, in eval mode."""
    from safetensors.torch import load_file

    directory = Path(directory).expanduser()
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelNotFound(f"{str(directory)!r} has no {WEIGHTS_FILE}: the checkpoint is incomplete, train again")
    model = TinyGPT(config)
    try:
        model.load_state_dict(load_file(str(weights_path)))
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[0]
        raise ModelNotFound(f"{str(weights_path)!r} does not match its config.json ({first_line}): train again") from None
    return model.to(device=device, dtype=dtype).eval()


def read_training(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """training.json and the tensors of training.safetensors (optimizer moments, RNG states)."""
    from safetensors.torch import load_file

    files = (directory / TRAINING_FILE, directory / TRAINING_TENSORS_FILE)
    if not all(path.is_file() for path in files):
        raise BadInput(f"{str(directory)!r} holds a model but no training state, so it cannot be resumed: train into a new --out")
    return json.loads(files[0].read_text()), load_file(str(files[1]))


def load_lm(directory: str | os.PathLike, name: str | None = None, dtype: torch.dtype = torch.float32,
            device: str = "cpu") -> LM:
    """A checkpoint as a `decodelab.LM` (what `decodelab.load(directory)` returns for one)."""
    from decodelab.model import LM
    from decodelab.tinygpt.backend import TinyGPTBackend

    directory = Path(directory).expanduser()
    model = load_model(directory, dtype=dtype, device=device)
    return LM(name or str(directory), TinyGPTBackend(model), byte_tokenizer(), (), "tinygpt", directory)
