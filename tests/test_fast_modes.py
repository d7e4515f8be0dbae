"""The fast modes: the compiled decode step equals the eager one; quantized and bfloat16 modes stay close to the
exact path (top-1 agreement above a stated floor) and say what they are; batches of rows equal single runs."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import decodelab
from decodelab.errors import BadInput, Unsupported
from decodelab.fidelity import FIDELITY_PROMPTS, measure_fidelity

# Floors for top-1 agreement with the exact path on 2 prompts x 16 steps of the bundled model. Measured on
# 4 prompts x 50 steps (bench/decode.py): int8 99.0%, int4 98.5%, bfloat16 99.5%.
TOP1_FLOOR = {("float32", "int8"): 0.9, ("float32", "int4"): 0.9, ("bfloat16", "none"): 0.9}


@pytest.fixture(scope="module")
def long_tiny_llama_dir(make_tiny_llama):
    """The tiny random Llama with a tied head, reading 1024 positions (so its cache grows past 256)."""
    return make_tiny_llama("long-tiny-llama", max_position_embeddings=1024, tie_word_embeddings=True)


def _stepwise_logits(lm, prompt_ids: list[int], tokens: list[int]) -> torch.Tensor:
    """(len(tokens), V) logits after each of `tokens`, fed one at a time through the cache."""
    backend = lm.backend
    cache = backend.new_cache(1)
    backend.forward(torch.tensor([prompt_ids]), cache, last_only=True)
    return torch.cat([backend.forward(torch.tensor([[token]]), cache)[0] for token in tokens])


@pytest.mark.slow
def test_compiled_step_equals_the_eager_one(long_tiny_llama_dir):
    eager = decodelab.load(long_tiny_llama_dir, backend="native")
    compiled = decodelab.load(long_tiny_llama_dir, backend="native", compile=True)
    assert compiled.compile_seconds > 0 and compiled.backend.compiled
    for prompt in ("Once upon a time", "안녕하세요! 오늘 날씨는"):
        options = dict(greedy=True, max_new_tokens=24, stop_token_ids=())
        ours, theirs = compiled.generate(prompt, **options), eager.generate(prompt, **options)
        assert ours.token_ids == theirs.token_ids
        prompt_ids = eager.prompt_ids(prompt)
        torch.testing.assert_close(
            _stepwise_logits(compiled, prompt_ids, ours.token_ids),
            _stepwise_logits(eager, prompt_ids, ours.token_ids),
            rtol=1e-5,
            atol=1e-5,
        )


@pytest.mark.slow
def test_compiled_step_never_recompiles_for_another_prompt_length_or_cache_size(long_tiny_llama_dir):
    lm = decodelab.load(
        long_tiny_llama_dir, backend="native", compile=True
    )  # the warm-up compiles for one row and for several
    graphs = counters["stats"]["unique_graphs"]
    for prompt_length, new_tokens, rows in [(3, 4, 1), (40, 4, 1), (250, 12, 1), (17, 4, 3), (300, 4, 2)]:
        ids = torch.randint(3, lm.backend.vocab_size, (prompt_length,), generator=torch.Generator().manual_seed(1))
        lm.sample(ids.tolist(), n=rows, seed=5, max_new_tokens=new_tokens, stop_token_ids=())
    # prompts of 250 and 300 tokens plus new ones cross the cache's first 256 positions: its buffers grew
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.slow
def test_compiled_sessions_undo_fork_and_rows_match_eager(long_tiny_llama_dir):
    eager = decodelab.load(long_tiny_llama_dir, backend="native")
    compiled = decodelab.load(long_tiny_llama_dir, backend="native", compile=True)
    rows = dict(n=3, seed=9, max_new_tokens=10, top_k=20, stop_token_ids=())
    assert [r.token_ids for r in compiled.sample("The sea", **rows)] == [
        r.token_ids for r in eager.sample("The sea", **rows)
    ]
    beams = dict(num_beams=3, max_new_tokens=8, num_return_sequences=3)
    ours, theirs = compiled.beam_search("The sea", **beams), eager.beam_search("The sea", **beams)
    assert [h.token_ids for h in ours.sequences] == [h.token_ids for h in theirs.sequences]
    session = compiled.session("The sea", greedy=True)
    first = [session.step().token_id for _ in range(4)]
    session.undo(2)
    assert [session.step().token_id for _ in range(2)] == first[2:]
    assert first == eager.generate("The sea", greedy=True, max_new_tokens=4, stop_token_ids=()).token_ids


def test_compiled_logits_are_ordinary_tensors(long_tiny_llama_dir):
    backend = decodelab.load(long_tiny_llama_dir, backend="native", compile=True).backend
    cache = backend.new_cache(1)
    backend.forward(torch.tensor([[5, 6, 7]]), cache)
    logits = backend.forward(torch.tensor([[8]]), cache)
    logits[0, 0, 0] = float("-inf")  # in place, outside inference mode
    assert cache.length == 4


@pytest.mark.slow
@pytest.mark.parametrize(("dtype", "quantize"), list(TOP1_FLOOR))
def test_fast_modes_keep_top1_agreement_above_the_floor(bundled, dtype, quantize):
    fast = decodelab.load(dtype=dtype, quantize=quantize)
    fidelity = measure_fidelity(bundled, fast, FIDELITY_PROMPTS[:2], steps=16)
    assert fidelity.steps == 32
    assert fidelity.top1_agreement >= TOP1_FLOOR[dtype, quantize], str(fidelity)
    assert fidelity.mean_kl < 0.05, str(fidelity)


def test_the_exact_path_measures_as_exact(bundled):
    fidelity = measure_fidelity(bundled, bundled, FIDELITY_PROMPTS[2:3], steps=4)
    assert (fidelity.top1_agreement, fidelity.mean_kl, fidelity.max_logprob_delta) == (1.0, 0.0, 0.0)


@pytest.mark.slow
def test_every_mode_runs_eager_and_compiled_side_by_side_in_one_process(long_tiny_llama_dir):
    """Five compiled modes in one process: ten graphs of the shared block step, past torch's default limit."""
    options = dict(greedy=True, max_new_tokens=6, stop_token_ids=())
    modes = [("float32", "int8"), ("float32", "int4"), ("bfloat16", "none"), ("bfloat16", "int8"), ("bfloat16", "int4")]
    compiled_models = []
    for dtype, quantize in modes:
        eager = decodelab.load(long_tiny_llama_dir, backend="native", dtype=dtype, quantize=quantize)
        assert (eager.mode.dtype, eager.mode.quantization, eager.mode.exact) == (dtype, quantize, False)
        if quantize != "none":
            assert eager.backend.embed_tokens.weight.numel() == 0  # the float table is freed: the head is read back
        tokens = eager.generate("Once upon a time", **options).token_ids
        assert len(tokens) == 6
        compiled = decodelab.load(long_tiny_llama_dir, backend="native", dtype=dtype, quantize=quantize, compile=True)
        compiled_models.append((compiled, tokens))
    for compiled, tokens in compiled_models:  # each model still runs its own graphs after the others compiled
        again = compiled.generate("Once upon a time", **options).token_ids
        # In bfloat16 the compiler keeps fused intermediates in float32 where eager rounds each op, and this
        # random model's near-flat logits can flip on that; float32 activations must agree exactly.
        assert again == tokens if compiled.mode.dtype == "float32" else len(again) == 6
        assert len(compiled.sample("Once upon a time", n=2, seed=1, max_new_tokens=3)) == 2


def test_modes_say_what_they_are(bundled, long_tiny_llama_dir):
    assert bundled.mode.exact and bundled.mode.label == "float32"
    assert bundled.mode.to_dict() == {
        "dtype": "float32",
        "quantization": "none",
        "compiled": False,
        "exact": True,
        "label": "float32",
    }
    fast = decodelab.load(long_tiny_llama_dir, backend="native", dtype="bfloat16", quantize="int8")
    assert not fast.mode.exact and fast.mode.label == "bfloat16, int8 weights"


def test_bad_fast_mode_requests_are_one_clear_error(tiny_gpt2_dir, long_tiny_llama_dir):
    with pytest.raises(BadInput, match="quantize must be one of none, int8, int4, got 'int3'"):
        decodelab.load(long_tiny_llama_dir, backend="native", quantize="int3")
    with pytest.raises(Unsupported, match="quantize runs on the native backend only"):
        decodelab.load(tiny_gpt2_dir, quantize="int8")
    with pytest.raises(Unsupported, match="compile runs on the native backend only"):
        decodelab.load(tiny_gpt2_dir, compile=True)


@pytest.mark.slow
def test_eight_rows_equal_eight_single_runs(bundled):
    """n=8 rows in one batch are the 8 single runs with seeds s..s+7, token for token."""
    options = dict(max_new_tokens=12, temperature=0.9, top_p=0.95, stop_token_ids=())
    rows = bundled.sample("The best thing about Korea is", n=8, seed=100, **options)
    assert [row.seed for row in rows] == list(range(100, 108))
    for row in rows:
        assert bundled.generate("The best thing about Korea is", seed=row.seed, **options).token_ids == row.token_ids
