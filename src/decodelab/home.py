"""Where decodelab keeps its files: `$DECODELAB_HOME`, default `~/.cache/decodelab`."""

import os
from pathlib import Path


def decodelab_home() -> Path:
    """The root of decodelab's cache; created on demand by whoever writes into it."""
    configured = os.environ.get("DECODELAB_HOME")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "decodelab"


def converted_models_dir() -> Path:
    """Where GGUF files converted to safetensors model directories are kept."""
    return decodelab_home() / "models"
