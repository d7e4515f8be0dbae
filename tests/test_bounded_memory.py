"""Bounded memory: last-position logits, chunked prefill and chunked scoring equal the full computations, and
prefilling or scoring a long prompt on the bundled model never holds (T, V) logits."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

import decodelab
from decodelab import decoding
from decodelab.decoding import DecodeState, prefill
from decodelab.scoring import score_ids
from decodelab.tinygpt import TinyGPT, TinyGPTBackend, TinyGPTConfig

BACKENDS = ["bundled", "tiny-llama-native", "tiny-llama-transformers", "tiny-gpt2-transformers", "tiny-gpt"]


@pytest.fixture(scope="module")
def loaded(bundled, tiny_llama_dir, tiny_gpt2_dir) -> dict:
    """Every backend implementation, on the bundled model or a tiny random one (built lazily, once)."""
    torch.manual_seed(0)
    builders = {
        "bundled": lambda: bundled.backend,
        "tiny-llama-native": lambda: decodelab.load(tiny_llama_dir, backend="native").backend,
        "tiny-llama-transformers": lambda: decodelab.load(tiny_llama_dir, backend="transformers").backend,
        "tiny-gpt2-transformers": lambda: decodelab.load(tiny_gpt2_dir).backend,
        "tiny-gpt": lambda: TinyGPTBackend(TinyGPT(TinyGPTConfig(block_size=128, n_layer=2, n_head=2, n_embd=32))),
    }
    return {"builders": builders, "built": {}}


@pytest.fixture(params=BACKENDS)
def backend(request, loaded):
    built = loaded["built"]
    if request.param not in built:
        built[request.param] = loaded["builders"][request.param]()
    return built[request.param]


def random_ids(backend, rows: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, backend.vocab_size, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_last_only_is_the_last_row_of_full_logits(backend):
    ids = random_ids(backend, 2, 37)  # (B, T)
    full = backend.forward(ids)  # (B, T, V)
    last = backend.forward(ids, last_only=True)
    assert last.shape == (2, 1, backend.vocab_size) and last.dtype == torch.float32
    torch.testing.assert_close(last, full[:, -1:], rtol=1e-4, atol=1e-4)
    # Continuing a cache: the head runs on the new chunk's last position.
    cache = backend.new_cache(2)
    backend.forward(ids[:, :20], cache, last_only=True)
    torch.testing.assert_close(backend.forward(ids[:, 20:], cache, last_only=True), full[:, -1:], rtol=1e-4, atol=1e-4)


def test_chunked_prefill_equals_a_full_forward_and_fills_the_cache(backend):
    ids = random_ids(backend, 2, 101, seed=1)  # (B, T): 6 chunks of 16 and a last one of 5
    full = backend.forward(ids)  # (B, T, V)
    cache = backend.new_cache(2)
    torch.testing.assert_close(prefill(backend, ids[:, :100], cache, chunk=16), full[:, 99], rtol=1e-4, atol=1e-4)
    # The cache holds all 100 positions: the next token's logits equal the full forward's last row.
    torch.testing.assert_close(backend.forward(ids[:, 100:], cache)[:, -1], full[:, 100], rtol=1e-4, atol=1e-4)


class RecordingBackend:
    """A real backend that records the (B, T) shape and last_only of every forward it runs."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def forward(self, input_ids, cache=None, *, last_only=False):
        self.calls.append((tuple(input_ids.shape), last_only))
        return self.inner.forward(input_ids, cache, last_only=last_only)


def test_a_prompt_of_one_chunk_is_one_forward(loaded):
    recording = RecordingBackend(loaded["builders"]["tiny-gpt"]())
    state = DecodeState(recording, list(range(100)), rows=3)  # 100 <= PREFILL_CHUNK
    # Rows share the prompt: one row is prefilled and its cache copied to the others.
    assert recording.calls == [((1, 100), True)] and state.logits.shape == (3, 256)
    state.advance(torch.tensor([7, 7, 7]))
    torch.testing.assert_close(state.logits, state.logits[:1].expand(3, -1), rtol=0, atol=1e-6)  # same rows
    recording.calls.clear()
    prefill(recording, torch.zeros(1, 97, dtype=torch.long), recording.new_cache(1), chunk=48)
    assert recording.calls == [((1, 48), True), ((1, 48), True), ((1, 1), True)]


PROMPT = (
    "The old lighthouse keeper climbed the spiral stairs every evening, counting the steps as his father had "
    "taught him. At the top he trimmed the wick, polished the great lens and watched the ships pass"
)


def test_chunked_prefill_keeps_greedy_generation_beam_search_and_sessions(bundled, monkeypatch):
    ids = bundled.tokenizer.encode(PROMPT)
    assert len(ids) > 32
    greedy = bundled.generate(ids, greedy=True, max_new_tokens=8)
    beams = bundled.beam_search(ids, num_beams=2, max_new_tokens=4)
    distribution = bundled.next_token_distribution(ids)
    full = bundled.backend.forward(torch.tensor([ids]))[0, -1]  # (V,) the unchunked prefill's logits

    monkeypatch.setattr(decoding, "PREFILL_CHUNK", 16)  # the same prompt now goes in 3 or more chunks
    state = DecodeState(bundled.backend, ids, rows=2)
    torch.testing.assert_close(state.logits, full.expand(2, -1), rtol=1e-4, atol=1e-4)
    chunked = bundled.generate(ids, greedy=True, max_new_tokens=8)
    assert chunked.token_ids == greedy.token_ids
    assert [s.logprob for s in chunked.steps] == pytest.approx([s.logprob for s in greedy.steps], abs=1e-4)
    assert [h.token_ids for h in bundled.beam_search(ids, num_beams=2, max_new_tokens=4).sequences] == [
        h.token_ids for h in beams.sequences
    ]
    torch.testing.assert_close(bundled.next_token_distribution(ids).logits, distribution.logits, rtol=1e-4, atol=1e-4)
    session = bundled.session(ids, greedy=True)
    first = session.step()
    session.undo()
    assert session.step().token_id == first.token_id == greedy.token_ids[0]


def previous_scores(lm, ids: list[int], prompt_length: int, stride: int | None = None, tie: float = 1e-5):
    """Each scored token's (logprob, rank, fewest rank, most rank) as scoring computed them before chunking: one
    uncached forward per window, keeping window x V logits. The rank bounds count logits within `tie` of the
    token's own as ties, either way: rounding may reorder those."""
    from decodelab.scoring import plan_windows

    window = lm.context_length
    scored = []
    for begin, start, end in plan_windows(len(ids), prompt_length, window, stride or window // 2):
        logits = lm.backend.forward(torch.tensor([ids[begin:end]]))[0, start - 1 - begin : end - 1 - begin]  # (n, V)
        targets = torch.tensor(ids[start:end])
        chosen = logits.gather(1, targets[:, None])  # (n, 1)
        logprobs = logits.log_softmax(dim=-1).gather(1, targets[:, None])[:, 0]  # (n,)
        ranks = [(logits > chosen + offset).sum(dim=-1) + 1 for offset in (0, tie, -tie)]  # (n,) each
        scored += zip(logprobs.tolist(), *(r.tolist() for r in ranks))
    return scored


@pytest.mark.parametrize("chunk", [7, 16, 512])
def test_chunked_scoring_equals_the_previous_window_forward(bundled, monkeypatch, chunk):
    ids = bundled.tokenizer.encode(PROMPT)
    expected = previous_scores(bundled, ids, 5)
    monkeypatch.setattr(decoding, "PREFILL_CHUNK", chunk)
    score = score_ids(bundled, ids, 5)  # positions 0..3 are context only, fed through the cache first
    assert [t.position for t in score.tokens] == list(range(5, len(ids)))
    assert [t.id for t in score.tokens] == ids[5:]
    torch.testing.assert_close(
        torch.tensor([t.logprob for t in score.tokens]), torch.tensor([e[0] for e in expected]), rtol=0, atol=1e-4
    )
    assert [t.rank for t in score.tokens] == [e[1] for e in expected]


@pytest.mark.parametrize("chunk", [16, 512])
def test_chunked_sliding_windows_equal_the_previous_window_forwards(tiny_gpt2_dir, monkeypatch, chunk):
    lm = decodelab.load(tiny_gpt2_dir)
    ids = random_ids(lm.backend, 1, 300, seed=2)[0].tolist()
    expected = previous_scores(lm, ids, 1, stride=43)
    monkeypatch.setattr(decoding, "PREFILL_CHUNK", chunk)
    score = score_ids(lm, ids, 1, stride=43)
    assert score.forwards == 5 and len(score.tokens) == 299
    torch.testing.assert_close(
        torch.tensor([t.logprob for t in score.tokens]), torch.tensor([e[0] for e in expected]), rtol=0, atol=1e-4
    )
    # A random model's logits are nearly flat (ranks in the tens of thousands): near-ties may swap on rounding.
    assert all(fewest <= t.rank <= most for t, (_, _, fewest, most) in zip(score.tokens, expected))
    assert sum(t.rank == e[1] for t, e in zip(score.tokens, expected)) >= 290


PEAK_PROBE = textwrap.dedent("""
    import ctypes, json, sys
    import decodelab
    from decodelab.decoding import DecodeState
    from decodelab.scoring import score_ids

    def status_kb(field):
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1])

    def peak_growth_mb(run):
        '''Peak resident memory above the resident memory just before run(), in MB.'''
        # Hand freed heap pages back first: left resident, run() could reuse them without its growth showing.
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the high-water mark VmHWM to the current VmRSS
        before = status_kb("VmRSS")
        run()
        return (status_kb("VmHWM") - before) / 1024

    lm = decodelab.load()
    length = int(sys.argv[1])
    text = " ".join(f"Chapter {i}: the river rose {i * 7 % 31} feet and the village moved uphill." for i in range(400))
    ids = lm.tokenizer.encode(text)[:length]
    assert len(ids) == length, len(ids)
    # Warm up (stacked weights, lazy imports) on a few ids: memory freed by a bigger warm-up could stay resident
    # and be reused unseen, hiding growth.
    DecodeState(lm.backend, ids[:64])
    score_ids(lm, ids[:64], 1)
    results = {"prefill_mb": peak_growth_mb(lambda: DecodeState(lm.backend, ids))}
    results["score_mb"] = peak_growth_mb(lambda: score_ids(lm, ids, 1))
    config = lm.backend.config
    cache_bytes = 2 * config.num_layers * config.num_kv_heads * config.head_dim * length * 4
    results["kv_cache_mb"] = cache_bytes / 2**20
    results["full_logits_mb"] = length * lm.backend.vocab_size * 4 / 2**20
    print(json.dumps(results))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status and calls glibc")
def test_prefill_and_scoring_of_a_3000_token_prompt_never_hold_all_logits(bundled):
    """Peak RSS growth (VmHWM reset just before, freed heap trimmed) of prefilling and of scoring 3000 tokens.

    Both include the KV cache (30 layers x 2 x 3 heads x 64 x 3000 positions x 4 bytes = 132 MB), which any
    prefill keeps, and scoring one chunk's 512 x V logits (96 MB) and the statistics of 64 of its rows. Measured
    on 2 cores: prefill 191 MB, scoring 344 MB; before chunking, 941 MB and 830 MB: the 3000 x 49,152 float32
    logits (563 MB) alone exceed both bounds. (`bundled` converts the model first, outside the measured process.)
    """
    probe = subprocess.run(
        [sys.executable, "-c", PEAK_PROBE, "3000"], capture_output=True, text=True, timeout=900, check=False
    )
    assert probe.returncode == 0, probe.stderr[-2000:]
    measured = json.loads(probe.stdout.strip().splitlines()[-1])
    assert measured["full_logits_mb"] > 550
    assert measured["prefill_mb"] < 300, measured
    assert measured["score_mb"] < 500, measured
