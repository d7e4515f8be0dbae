"""Tiny-GPT checkpoints: a directory that `decodelab.load` (and so every `--model DIR`) reads like any model.

    config.json            TinyGPTConfig with "model_type": "decodelab-tinygpt" (how a checkpoint is recognised)
    model.safetensors      the weights
    tokenizer.json         the byte tokenizer
    training.json          step, losses, training options, corpus (checkpoints written by `train`)
    training.safetensors   optimizer moments and RNG states, so `--resume` continues exactly
    loss.png               the loss curve

Anything else in the directory (your notes, a `tiny inspect --out DIR/pictures` folder) is yours: a save
replaces only the files above. It does so atomically, with a small redo log inside the directory:

1. the new files are written into `DIR/.saving-XXXXXXXX` with a manifest of their names, and fsync'd;
2. that directory is renamed to `DIR/.saving-committed`, and DIR fsync'd: the commit point;
3. each staged file replaces its namesake by `os.replace` (config.json, the marker, last), checkpoint files the
   new save lacks are removed (training files, when `save_model` overwrites a trained checkpoint), DIR is
   fsync'd and the staging directory removed.

A crash before step 2 leaves the old checkpoint untouched and a stale `.saving-*` directory, which the next save
(or `train`) deletes. A crash after it leaves `.saving-committed`, and `finish_committed_save` (run by every
load, save and `train`) redoes step 3, so the new checkpoint is complete. Readers never see the directory
vanish; only while step 3 runs (microseconds) could they see old and new files side by side.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from glob import escape
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
TOKENIZER_FILE = "tokenizer.json"
TRAINING_FILE = "training.json"
TRAINING_TENSORS_FILE = "training.safetensors"
LOSS_CURVE_FILE = "loss.png"
CHECKPOINT_FILES = (CONFIG_FILE, WEIGHTS_FILE, TOKENIZER_FILE, TRAINING_FILE, TRAINING_TENSORS_FILE, LOSS_CURVE_FILE)
STAGING_PREFIX = ".saving-"  # DIR/.saving-XXXXXXXX: a save being written (stale if its process died)
COMMITTED = ".saving-committed"  # DIR/.saving-committed: a complete save whose files are being moved into place
MANIFEST = "manifest.json"  # in the staging directory: the names of the new checkpoint's files


def is_tinygpt_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a tiny-GPT checkpoint (its config.json names our model type), counting a
    committed save whose files are still to be moved into place (loading finishes it)."""
    return any(
        _names_our_model_type(path)
        for path in (Path(directory) / CONFIG_FILE, Path(directory) / COMMITTED / CONFIG_FILE)
    )


def _names_our_model_type(config: Path) -> bool:
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == MODEL_TYPE
    except (ValueError, AttributeError, OSError):
        return False


def write_model_files(directory: Path, model: TinyGPT) -> None:
    """config.json, model.safetensors and tokenizer.json of `model` into `directory`."""
    from safetensors.torch import save_file

    (directory / CONFIG_FILE).write_text(json.dumps(model.config.to_json(), indent=2) + "\n")
    weights = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    save_file(weights, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    save_byte_tokenizer(directory)


def save_model(model: TinyGPT, directory: str | os.PathLike) -> Path:
    """Save a tiny GPT (trained or not) as a loadable checkpoint directory, atomically; return its path.
    `directory` must be new, empty or a checkpoint; other files in a checkpoint directory are left alone."""
    target = Path(directory).expanduser()
    recover_interrupted_save(target)
    if target.exists() and not target.is_dir():
        raise BadInput(f"{str(target)!r} is a file: give a directory for the checkpoint")
    if target.is_dir() and any(target.iterdir()) and not is_tinygpt_checkpoint(target):
        raise BadInput(f"{str(target)!r} is a directory that is not a tiny-GPT checkpoint: choose a new directory")
    write_atomically(target, lambda staging: write_model_files(staging, model))
    return target


def prepare_directory(target: Path) -> None:
    """Create `target` if needed and prove a file can be written in it, before any training time is spent."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=STAGING_PREFIX, dir=target)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise BadInput(_cannot_write(target, error)) from None


def write_atomically(target: Path, fill: Callable[[Path], None]) -> None:
    """Replace the checkpoint files in `target` by the ones `fill(staging)` writes, as the module docstring
    describes; every other entry of `target` stays. An OSError becomes a one-line BadInput naming `target`."""
    try:
        target.mkdir(parents=True, exist_ok=True)
        finish_committed_save(target)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=target))
        try:
            fill(staging)
            names = sorted(path.name for path in staging.iterdir())
            (staging / MANIFEST).write_text(json.dumps(names) + "\n")
            for name in [*names, MANIFEST]:
                _fsync_file(staging / name)
            _fsync_directory(staging)
            os.rename(staging, target / COMMITTED)  # the commit point
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_directory(target)
        finish_committed_save(target)
    except OSError as error:
        raise BadInput(_cannot_write(target, error)) from None


def finish_committed_save(target: Path) -> None:
    """Step 3 of a save: move a committed save's files into `target`. Safe to repeat after a crash, and to run
    in a reader while the writer runs it too (whoever moves a file first wins; the other skips it)."""
    committed = target / COMMITTED
    try:
        names = json.loads((committed / MANIFEST).read_text())
    except FileNotFoundError:  # no committed save (or another process just finished it)
        return
    for name in CHECKPOINT_FILES:
        if name not in names:
            (target / name).unlink(missing_ok=True)  # from an older checkpoint of another kind
    for name in sorted(names, key=lambda name: name == CONFIG_FILE):  # the marker last
        try:
            os.replace(committed / name, target / name)
        except FileNotFoundError:
            pass
    _fsync_directory(target)
    shutil.rmtree(committed, ignore_errors=True)


def recover_interrupted_save(target: Path) -> None:
    """Before `train` or a save: finish a committed save and delete stale staging directories (the writer's
    side: only the one process writing `target` may delete them). Also tidies what earlier decodelab versions,
    which swapped whole directories, could leave beside `target`: `.NAME.saving-*` and `.NAME.previous`."""
    try:
        if (target / COMMITTED).is_dir():
            finish_committed_save(target)
        for stale in [
            *target.glob(escape(STAGING_PREFIX) + "*"),
            *target.parent.glob(f".{escape(target.name)}.saving-*"),
        ]:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:  # the probe file of `prepare_directory`
                stale.unlink(missing_ok=True)
        previous = target.parent / f".{target.name}.previous"
        if previous.is_dir():
            if not target.exists() and is_tinygpt_checkpoint(previous):
                os.rename(previous, target)
            else:
                shutil.rmtree(previous, ignore_errors=True)
    except OSError as error:
        raise BadInput(_cannot_write(target, error)) from None


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_directory(path: Path) -> None:
    """Make renames in `path` durable (POSIX; Windows cannot open a directory and commits renames itself)."""
    if os.name == "nt":
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _cannot_write(target: Path, error: OSError) -> str:
    reason = error.strerror or _first_line(error)
    return f"cannot write the checkpoint directory {str(target)!r} ({reason}): choose another directory"


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def read_config(directory: Path) -> TinyGPTConfig:
    if not is_tinygpt_checkpoint(directory):
        raise ModelNotFound(
            f"{str(directory)!r} is not a tiny-GPT checkpoint (no config.json with model_type {MODEL_TYPE!r})"
        )
    return TinyGPTConfig.from_json(json.loads((directory / CONFIG_FILE).read_text()))


def load_model(directory: str | os.PathLike, dtype: torch.dtype = torch.float32, device: str = "cpu") -> TinyGPT:
    """The TinyGPT saved in `directory`, in eval mode (first finishing a save a crash interrupted)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory).expanduser()
    try:
        finish_committed_save(directory)
    except OSError as error:
        raise ModelNotFound(
            f"a save into {str(directory)!r} was interrupted and cannot be finished here "
            f"({_first_line(error)}): load it where the directory is writable"
        ) from None
    config = read_config(directory)
    weights_path = directory / WEIGHTS_FILE
    if not weights_path.is_file():
        raise ModelNotFound(f"{str(directory)!r} has no {WEIGHTS_FILE}: the checkpoint is incomplete, train again")
    try:
        weights = load_file(str(weights_path))
    except (SafetensorError, OSError) as error:
        raise ModelNotFound(
            f"{str(weights_path)!r} is damaged ({_first_line(error)}): restore it from a backup "
            "or train again (`decodelab tiny train --overwrite`)"
        ) from None
    model = TinyGPT(config)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        raise ModelNotFound(
            f"{str(weights_path)!r} does not match its config.json ({_first_line(error)}): train again"
        ) from None
    return model.to(device=device, dtype=dtype).eval()


def read_training(directory: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """training.json and the tensors of training.safetensors (optimizer moments, RNG states)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    files = (directory / TRAINING_FILE, directory / TRAINING_TENSORS_FILE)
    if not all(path.is_file() for path in files):
        raise BadInput(
            f"{str(directory)!r} holds a model but no training state, so it cannot be resumed: train into a new --out"
        )
    try:
        state, tensors = json.loads(files[0].read_text()), load_file(str(files[1]))
    except (ValueError, SafetensorError, OSError) as error:  # ValueError: bad JSON or UTF-8
        raise BadInput(
            f"the training state in {str(directory)!r} is damaged ({_first_line(error)}): restore "
            f"{TRAINING_FILE} and {TRAINING_TENSORS_FILE} from a backup, or start again with --overwrite"
        ) from None
    state = state if isinstance(state, dict) else {}
    missing = [key for key in ("step", "config", "corpus", "optimizer") if key not in state]
    missing += [key for key in ("rng.batches", "rng.torch") if key not in tensors]
    if missing:
        raise BadInput(
            f"the training state in {str(directory)!r} is incomplete (no {', '.join(missing)}): restore it "
            "from a backup, or start again with --overwrite"
        )
    return state, tensors


def load_lm(
    directory: str | os.PathLike, name: str | None = None, dtype: torch.dtype = torch.float32, device: str = "cpu"
) -> LM:
    """A checkpoint as a `decodelab.LM` (what `decodelab.load(directory)` returns for one)."""
    from decodelab.model import LM
    from decodelab.tinygpt.backend import TinyGPTBackend

    directory = Path(directory).expanduser()
    model = load_model(directory, dtype=dtype, device=device)
    return LM(name or str(directory), TinyGPTBackend(model), byte_tokenizer(), (), "tinygpt", directory)
