"""decodelab: see and steer how a language model writes, one token at a time.

    import decodelab
    lm = decodelab.load()                      # the bundled SmolLM2-135M-Instruct
    lm.tokenize("Transformers are the")        # the token view
    lm.next_token_distribution("Transformers are the").top(5)

Names are imported on first use, so `import decodelab` (and the CLI's light commands) stay fast.
"""

import os
from importlib import import_module
from typing import TYPE_CHECKING

# torch's OpenMP threads sleep between parallel regions instead of spinning: on a shared or busy machine spinning
# threads steal the cores the work needs (bench/threads.py: decode ~3x slower beside one busy process), and idle
# it costs little. libgomp reads this once, when torch is first imported, so it is set before anything imports
# torch; a user's own OMP_WAIT_POLICY is kept, and DECODELAB_OMP_WAIT_POLICY=keep leaves the runtime's default.
if os.environ.get("DECODELAB_OMP_WAIT_POLICY") != "keep":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_EXPORTS = {
    "load": "decodelab.loading",
    "LM": "decodelab.model",
    "Tokenizer": "decodelab.tokenizer",
    "Token": "decodelab.tokens",
    "TokenView": "decodelab.tokens",
    "tokenize": "decodelab.tokens",
    "Distribution": "decodelab.distribution",
    "Candidate": "decodelab.distribution",
    "DecodelabError": "decodelab.errors",
    "END_OF_TURN_MARKERS": "decodelab.chat",
    "GenerationConfig": "decodelab.generation_config",
    "Session": "decodelab.session",
    "Generation": "decodelab.engine",
    "Step": "decodelab.records",
    "Result": "decodelab.records",
    "StopReason": "decodelab.records",
    "SamplerChain": "decodelab.samplers",
    "Score": "decodelab.scoring",
    "BeamResult": "decodelab.beam",
    "BeamTree": "decodelab.beam",
    "ScoredToken": "decodelab.scoring",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:
    from decodelab.beam_records import BeamResult, BeamTree
    from decodelab.chat import END_OF_TURN_MARKERS
    from decodelab.distribution import Candidate, Distribution
    from decodelab.engine import Generation
    from decodelab.errors import DecodelabError
    from decodelab.generation_config import GenerationConfig
    from decodelab.loading import load
    from decodelab.model import LM
    from decodelab.records import Result, Step, StopReason
    from decodelab.samplers import SamplerChain
    from decodelab.scoring import Score, ScoredToken
    from decodelab.session import Session
    from decodelab.tokenizer import Tokenizer
    from decodelab.tokens import Token, TokenView, tokenize


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'decodelab' has no attribute {name!r}")
