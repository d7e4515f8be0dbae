"""The table of backends `decodelab.load` chooses from: each backend's name, which model directories it claims,
and how it loads one into an `LM`.

The built-in backends (the tiny GPT's checkpoints, the native Llama, transformers) register in
`decodelab.loading` through `register_backend`, the same call a third-party backend makes:

    register_backend(BackendLoader("mine", claims=is_my_format, load=load_mine))

`load(path)` (backend "auto") asks the loaders in registration order and uses the first that claims the
directory; `load(path, backend="mine")` uses that loader whether it claims the directory or not. A hub id goes
to the first loader that reads the hub. (Entry points were weighed and left out: discovering them costs ~0.8 s
of every load in a large environment; a plugin registers on import instead.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from decodelab.errors import BadInput

if TYPE_CHECKING:
    from decodelab.model import LM


@dataclass(frozen=True)
class LoadRequest:
    """What the user asked `decodelab.load` for, resolved to one place to read."""

    location: str  # a local model directory, or a hub id for a loader that reads the hub
    name: str  # what the user asked for (the LM's name)
    source: str  # "bundled" | "gguf" | "directory" | "hub"
    dtype: torch.dtype
    device: str
    trust_remote_code: bool = False
    local_only: bool = True  # read local files only (a directory, or a hub id already in the cache)

    @property
    def directory(self) -> Path | None:
        """The model directory, when the location is local."""
        return None if self.source == "hub" else Path(self.location)


@dataclass(frozen=True)
class BackendLoader:
    name: str  # what `decodelab.load(..., backend=name)` and `--backend` call it
    claims: Callable[[Path], bool]  # whether "auto" should load this directory with it (cheap: reads a file or two)
    load: Callable[[LoadRequest], LM]
    reads_hub: bool = False  # whether it can load a hub id (downloading it when allowed)
    fast_modes: bool = False  # whether its models take quantize= and compile= (see decodelab.load)


BACKENDS: dict[str, BackendLoader] = {}  # name -> loader, in the order "auto" asks them


def register_backend(loader: BackendLoader) -> None:
    """Add `loader` to the table (after those registered before it); a name already taken is an error."""
    if loader.name == "auto" or loader.name in BACKENDS:
        raise BadInput(f"a backend named {loader.name!r} is already registered: choose another name")
    BACKENDS[loader.name] = loader


def backend_names() -> tuple[str, ...]:
    """What `backend=` accepts: "auto", then every registered backend."""
    return ("auto", *BACKENDS)


def claiming_loader(directory: Path) -> BackendLoader | None:
    """The first registered loader that claims `directory`, if any does."""
    return next((loader for loader in BACKENDS.values() if loader.claims(directory)), None)


def hub_loader(backend: str) -> BackendLoader:
    """The loader for a hub id: the named one (which must read the hub), or for "auto" the first that does."""
    if backend != "auto":
        loader = BACKENDS[backend]
        if not loader.reads_hub:
            raise BadInput(
                f"backend={backend!r} reads local directories only: download the model or use backend='auto'"
            )
        return loader
    for loader in BACKENDS.values():
        if loader.reads_hub:
            return loader
    raise BadInput("no registered backend reads hub ids: pass a local model directory or a .gguf file")
