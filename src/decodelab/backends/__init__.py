"""Model backends: the narrow contract the engine drives, and the implementations that meet it.

A backend turns token ids into next-token logits, optionally advancing a KV cache:

    cache = backend.new_cache(batch_size)
    logits = backend.forward(input_ids, cache)   # (B, T) ids -> (B, T, V) float32 logits
    logits = backend.forward(input_ids, cache, last_only=True)   # (B, T) -> (B, 1, V): the last position's only

`llama.NativeLlama` is decodelab's own Llama-family implementation (the bundled SmolLM2 runs on it;
parity with transformers is tested); `transformers.TransformersBackend` wraps any
`AutoModelForCausalLM`.
"""

from decodelab.backends.base import Backend

__all__ = ["Backend"]
