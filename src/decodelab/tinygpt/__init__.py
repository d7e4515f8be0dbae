"""A tiny GPT from scratch: define it, train it on a text file, sample it through decodelab's engine, look inside.

    from decodelab.tinygpt import train
    result = train("runs/tiny")                        # the built-in pydoc corpus; or corpus="book.txt"
    lm = decodelab.load("runs/tiny")                   # an LM like any other: generate, score, session, server
    lm.generate("The ", temperature=0.8, seed=0, max_new_tokens=200).text

Modules: `config` (TinyGPTConfig, TrainConfig), `model` (TinyGPT, nanoGPT-style), `cache` (its KV cache),
`tokenizer` (one token per byte), `corpus` (training text), `training` (`train`: the loop, resume, Ctrl-C),
`checkpoint` (atomic save, load), `backend` (the Backend contract), `plots` (loss curve, embeddings, attention),
`progress` (the progress bar).
Names are imported on first use, so the CLI can read the configs without importing torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "TinyGPTConfig": "decodelab.tinygpt.config",
    "TrainConfig": "decodelab.tinygpt.config",
    "TinyGPT": "decodelab.tinygpt.model",
    "KVCache": "decodelab.tinygpt.cache",
    "TinyGPTBackend": "decodelab.tinygpt.backend",
    "byte_tokenizer": "decodelab.tinygpt.tokenizer",
    "read_corpus": "decodelab.tinygpt.corpus",
    "is_tinygpt_checkpoint": "decodelab.tinygpt.checkpoint",
    "load_lm": "decodelab.tinygpt.checkpoint",
    "load_model": "decodelab.tinygpt.checkpoint",
    "save_model": "decodelab.tinygpt.checkpoint",
    "train": "decodelab.tinygpt.training",
    "evaluate": "decodelab.tinygpt.training",
    "TrainResult": "decodelab.tinygpt.training",
    "embeddings_figure": "decodelab.tinygpt.plots",
    "attention_figure": "decodelab.tinygpt.plots",
    "loss_curve_figure": "decodelab.tinygpt.plots",
    "write_inspection": "decodelab.tinygpt.plots",
}

__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from decodelab.tinygpt.backend import TinyGPTBackend
    from decodelab.tinygpt.cache import KVCache
    from decodelab.tinygpt.checkpoint import is_tinygpt_checkpoint, load_lm, load_model, save_model
    from decodelab.tinygpt.config import TinyGPTConfig, TrainConfig
    from decodelab.tinygpt.corpus import read_corpus
    from decodelab.tinygpt.model import TinyGPT
    from decodelab.tinygpt.plots import attention_figure, embeddings_figure, loss_curve_figure, write_inspection
    from decodelab.tinygpt.tokenizer import byte_tokenizer
    from decodelab.tinygpt.training import TrainResult, evaluate, train


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'decodelab.tinygpt' has no attribute {name!r}")
