"""Several requests' rows in one forward: each group of rows continues its own cache at its own length, and gets
what its own forward would give (the server's batched step, `decodelab.work.run_together`)."""

from __future__ import annotations

import pytest
import torch

import decodelab
from decodelab.decoding import DecodeState
from decodelab.engine import Generation
from decodelab.generation_config import GenerationConfig
from decodelab.tinygpt.backend import TinyGPTBackend
from decodelab.tinygpt.config import TinyGPTConfig
from decodelab.tinygpt.model import TinyGPT
from decodelab.work import Forward, run_together

PROMPTS = ["The capital of France is", "Once upon a time, in a small village by the sea, there", "한국의 수도는"]


def states(lm, rows=(1, 2, 1)) -> list[DecodeState]:
    """A decode state per prompt, of different lengths and row counts."""
    return [DecodeState(lm.backend, lm.prompt_ids(prompt), rows=n) for prompt, n in zip(PROMPTS, rows)]


def step_alone_and_together(backend, alone: list[DecodeState], together: list[DecodeState], steps: int):
    """Feed the same tokens to both sets of states for `steps` steps; the logits after each (alone, together)."""
    pairs = []
    for step in range(steps):
        tokens = [(state.logits.argmax(-1) + step) % backend.vocab_size for state in alone]  # (B_i,) per state
        for state, chosen in zip(alone, tokens):
            state.advance(chosen)
        run_together([state.push(chosen) for state, chosen in zip(together, tokens)])
        pairs.append(([s.logits for s in alone], [s.logits for s in together]))
    return pairs


def assert_same_as_alone(lm, steps=4):
    alone = states(lm)
    together = [state.fork() for state in alone]
    for solo, batched in step_alone_and_together(lm.backend, alone, together, steps):
        for own, shared in zip(solo, batched):
            assert shared.shape == own.shape
            torch.testing.assert_close(shared.log_softmax(-1), own.log_softmax(-1), atol=1e-4, rtol=0)
            assert torch.equal(shared.argmax(-1), own.argmax(-1))
    assert [s.cache.length for s in together] == [s.cache.length for s in alone]


def test_the_bundled_models_groups_get_their_own_forwards_logits(bundled):
    assert hasattr(bundled.backend, "forward_groups")
    assert_same_as_alone(bundled)


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_groups_get_their_own_forwards_logits(tiny_llama_dir, quantize):
    assert_same_as_alone(decodelab.load(tiny_llama_dir, backend="native", quantize=quantize))


def test_the_tiny_gpts_groups_get_their_own_forwards_logits(bundled):
    torch.manual_seed(0)
    model = TinyGPT(
        TinyGPTConfig(vocab_size=bundled.tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)
    )
    lm = decodelab.LM("tiny", TinyGPTBackend(model), bundled.tokenizer)
    assert_same_as_alone(lm)


def test_a_backend_without_forward_groups_runs_each_group_alone(tiny_gpt2_dir):
    lm = decodelab.load(tiny_gpt2_dir, backend="transformers")
    assert not hasattr(lm.backend, "forward_groups")
    assert_same_as_alone(lm, steps=2)


def test_a_forward_together_advances_each_cache_by_one(bundled):
    group = states(bundled)
    lengths = [state.cache.length for state in group]
    forwards = [state.push(state.logits.argmax(-1)) for state in group]
    assert all(isinstance(forward, Forward) for forward in forwards)
    run_together(forwards)
    assert [state.cache.length for state in group] == [length + 1 for length in lengths]
    assert [state.logits.shape[0] for state in group] == [1, 2, 1]


def test_rows_that_stop_leave_the_batch_and_the_others_go_on_as_alone(bundled):
    """Row r of n draws with seed + r and its chain sees its own history only: a row equals a one-row generation
    with its seed, however many rows stopped before it (here stop strings end rows at different steps)."""
    ids = bundled.prompt_ids("Write three words:")
    config = GenerationConfig(
        seed=11, max_new_tokens=12, temperature=1.0, top_k=40, repetition_penalty=1.3, stop=("e",)
    )
    rows = Generation(bundled, ids, config, n=4).run()
    assert len({len(row.token_ids) for row in rows}) > 1  # the rows stopped at different steps
    for row, result in enumerate(rows):
        alone = Generation(bundled, ids, config.with_(seed=11 + row)).run()[0]
        assert alone.token_ids == result.token_ids and alone.stop_reason == result.stop_reason
