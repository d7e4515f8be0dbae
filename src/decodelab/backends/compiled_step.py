"""The native Llama's one-token decode step with its transformer blocks `torch.compile`d (gpt-fast's shape).

    logits (B, 1, V) = step(tokens (B, 1), input_pos (1,), KV buffers)

Each block writes its new keys and values into the cache's buffers at `input_pos` and attends over the whole
buffer, masking the positions not yet written, so nothing in it depends on how long the prompt was: `input_pos`
is a tensor, and the buffer length and batch size are marked dynamic, so one graph serves every prompt length,
every cache size and every number of rows (a batch of one is a second graph: torch specializes size 1).

Compiled is the block, not the whole step ("regional" compilation): every block runs the same code on its own
weights, so one graph serves all of them, and the warm-up compiles one block instead of unrolling all of them
(~4 minutes for SmolLM2's 30 blocks on 2 cores, against tens of seconds). The embedding lookup and the LM head
run eagerly around them. Prefill stays eager too: it is compute-bound, and compiling it would mean a graph per
prompt-length bucket.

The compiled block computes what the eager one does, operation for operation, but the compiler fuses
element-wise work and may sum in another order, so logits agree to ~1e-6, not bit for bit (tests check that
greedy tokens are identical and logits allclose 1e-5).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, cast

import torch

from decodelab.backends.kv_cache import StaticSlots

if TYPE_CHECKING:
    from decodelab.backends.llama import Block, KVCache, NativeLlama

# Graphs of `_block_step` one process may keep: two (one row, several rows) per kind of block, and a kind per
# dtype and quantization; torch's default of 8 would fail a fifth compiled mode loaded beside four others.
GRAPHS_PER_PROCESS = 64

# Inductor options measured with bench/decode.py --compile-options on the bundled model: see README "Fast modes".
DEFAULT_INDUCTOR_OPTIONS: dict[str, Any] = {}


def _block_step(
    block: Block,
    x: torch.Tensor,  # (B, 1, C)
    cos: torch.Tensor,  # (1, 1, D)
    sin: torch.Tensor,  # (1, 1, D)
    keys: torch.Tensor,  # (B, Hkv, S, D), this block's
    values: torch.Tensor,  # (B, Hkv, S, D)
    input_pos: torch.Tensor,  # (1,)
) -> torch.Tensor:
    written = torch.arange(keys.shape[2], device=x.device) <= input_pos  # (S,): the positions to attend to
    return block.forward(x, cos, sin, StaticSlots(keys, values, input_pos), written[None])


class CompiledDecodeStep:
    def __init__(self, model: NativeLlama, **inductor_options: Any):
        self.model = model
        # Tables for the whole context: a table that grew under the graph would invalidate it.
        self.cos, self.sin = model._rotary(model.context_length)  # (P, 1, D) each
        options = {**DEFAULT_INDUCTOR_OPTIONS, **inductor_options}
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, GRAPHS_PER_PROCESS)
        self._block = torch.compile(_block_step, fullgraph=True, options=options or None)

    def step(self, tokens: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, 1, V) after `tokens` (B, 1), which continue what `cache` holds; advances the cache."""
        model, past = self.model, cache.length
        cache.reserve(past + 1)
        for buffer in (*cache.keys, *cache.values):  # (B, Hkv, S, D): any B and S reuse the graph
            torch._dynamo.maybe_mark_dynamic(buffer, 0)
            torch._dynamo.maybe_mark_dynamic(buffer, 2)
        input_pos = torch.tensor([past], device=tokens.device)
        with torch.inference_mode():
            cos, sin = self.cos[input_pos], self.sin[input_pos]  # (1, 1, D)
            x = model.embed(tokens)  # (B, 1, C)
            torch._dynamo.maybe_mark_dynamic(x, 0)
            for layer, block in enumerate(cast("list[Block]", model.layers)):
                x = self._block(block, x, cos, sin, cache.keys[layer], cache.values[layer], input_pos)
        cache.advance(1)
        # Outside inference mode, as the eager forward: an ordinary tensor the caller may change in place.
        return model.head.forward(model.norm.forward(x)).float()  # (B, 1, V)

    def warm_up(self) -> float:
        """Compile now, on throwaway caches of one and of two rows; returns the seconds it took."""
        started = time.perf_counter()
        for rows in (1, 2):
            cache = self.model.new_cache(rows)
            tokens = torch.zeros(rows, 1, dtype=torch.long, device=self.model.device)
            self.model.forward(tokens, cache)
            self.step(tokens, cache)
        return time.perf_counter() - started
