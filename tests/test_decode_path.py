"""One decode path: the loop, sessions, beam search and scoring read a narrow `Decoder`; every KV cache meets one
`Cache` contract (decodelab's own two share one base); backends come from one table."""

from pathlib import Path

import pytest
import torch

import decodelab
from decodelab.backends.base import Cache
from decodelab.backends.kv_cache import LayerKVCache
from decodelab.backends.registry import BACKENDS, BackendLoader, backend_names, register_backend
from decodelab.beam import beam_search
from decodelab.decoder import Decoder, as_decoder
from decodelab.decoding import DecodeState
from decodelab.engine import Generation
from decodelab.generation_config import GenerationConfig
from decodelab.scoring import score_ids
from decodelab.session import Session
from decodelab.tinygpt import TinyGPT, TinyGPTConfig
from decodelab.tinygpt.backend import TinyGPTBackend


@pytest.fixture(scope="module")
def tiny_gpt_backend():
    torch.manual_seed(0)
    return TinyGPTBackend(TinyGPT(TinyGPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=2, n_embd=32)))


def test_the_lm_hands_out_its_decoder_and_every_entry_point_takes_either(bundled):
    decoder = bundled.decoder
    assert isinstance(decoder, Decoder) and as_decoder(bundled) == decoder and as_decoder(decoder) is decoder
    assert decoder.stop_ids() == bundled.stop_ids() and decoder.stop_ids(token_ids=[7]) == {7}
    ids = bundled.prompt_ids("The capital of France is")
    config = GenerationConfig(greedy=True, max_new_tokens=5)
    assert Generation(decoder, ids, config).run()[0].token_ids == Generation(bundled, ids, config).run()[0].token_ids
    assert Session(decoder, ids, config).step().token_id == Session(bundled, ids, config).step().token_id
    assert (
        beam_search(decoder, ids, 2, max_new_tokens=3).to_dict()["sequences"]
        == beam_search(bundled, ids, 2, max_new_tokens=3).to_dict()["sequences"]
    )
    assert score_ids(decoder, ids, 2).total_logprob == score_ids(bundled, ids, 2).total_logprob


def test_configure_recomputes_the_stop_ids_for_new_stop_strings(bundled):
    session = bundled.session("Hi", chat=True, greedy=True)
    marker = bundled.tokenizer.token_to_id("<|im_start|>")  # a special token, so a one-token stop string
    assert marker not in session.stop_ids
    session.configure(stop=("<|im_start|>",))
    assert marker in session.stop_ids
    step = session.append(marker)
    assert step.is_stop and session.stop_reason.kind == "stop_token" and session.stop_reason.token_id == marker
    session.undo()
    session.configure(stop_token_ids=(5,))
    assert session.stop_ids == {5}


def test_session_finds_stop_strings_across_tokens_as_the_loop_does(bundled):
    session = bundled.session("The capital of England is", greedy=True, stop=("on, Eng",))
    for token in bundled.tokenizer.encode(" London, England", add_special_tokens=False):
        session.append(token)
    assert len(session.steps) > 2  # the stop string spans token boundaries
    reason = session.stop_reason
    assert reason.kind == "stop_string" and reason.string == "on, Eng"
    session.undo(len(session.steps) - 1)
    assert session.stop_reason is None


def test_both_of_decodelabs_caches_share_one_base_and_meet_the_contract(bundled, tiny_gpt2_dir, tiny_gpt_backend):
    transformers_backend = decodelab.load(tiny_gpt2_dir).backend
    for backend in (bundled.backend, tiny_gpt_backend, transformers_backend):
        cache = backend.new_cache(2)
        assert isinstance(cache, Cache)
        ids = torch.randint(0, 200, (2, 6), generator=torch.Generator().manual_seed(1))
        backend.forward(ids[:, :4], cache)
        twin = cache.fork()
        backend.forward(ids[:, 4:], twin)  # advancing the fork leaves the original where it was
        assert (cache.length, twin.length) == (4, 6)
        twin.crop(4)
        twin.reorder(torch.tensor([1, 1]))
        again = backend.forward(ids[1:, 4:].expand(2, -1), twin)[:, -1]
        torch.testing.assert_close(again[0], again[1])
    assert isinstance(bundled.backend.new_cache(1), LayerKVCache)
    assert isinstance(tiny_gpt_backend.new_cache(1), LayerKVCache)
    assert type(bundled.backend.new_cache(1)).crop is type(tiny_gpt_backend.new_cache(1)).crop is LayerKVCache.crop


def test_a_backend_refuses_a_cache_it_did_not_make(bundled, tiny_gpt_backend):
    with pytest.raises(decodelab.DecodelabError, match="runs on the cache its new_cache"):
        bundled.backend.forward(torch.tensor([[1]]), object())


def test_beam_search_starts_from_a_decode_state(bundled, monkeypatch):
    started = []
    original = DecodeState.__init__

    def recording(self, backend, prompt_ids, rows=1, **options):
        started.append((len(prompt_ids), rows))
        original(self, backend, prompt_ids, rows, **options)

    monkeypatch.setattr(DecodeState, "__init__", recording)
    bundled.beam_search("The cat", num_beams=2, max_new_tokens=2)
    assert started == [(len(bundled.prompt_ids("The cat")), 1)]


def test_backends_come_from_one_table_a_third_party_joins(tmp_path, bundled):
    assert backend_names()[:4] == ("auto", "tinygpt", "native", "transformers")
    marker = tmp_path / "scripted.txt"
    marker.write_text("x")

    def load_scripted(request):
        return decodelab.LM(
            "scripted", bundled.backend, bundled.tokenizer, bundled.eos_ids, request.source, Path(request.location)
        )

    register_backend(
        BackendLoader("scripted", claims=lambda directory: (directory / "scripted.txt").is_file(), load=load_scripted)
    )
    try:
        assert decodelab.load(tmp_path).name == "scripted"
        assert decodelab.load(tmp_path, backend="scripted").name == "scripted"
        with pytest.raises(decodelab.DecodelabError, match="reads local directories only"):
            decodelab.load("someone/model", backend="scripted")
        with pytest.raises(decodelab.DecodelabError, match="already registered"):
            register_backend(BackendLoader("native", claims=lambda directory: False, load=load_scripted))
    finally:
        del BACKENDS["scripted"]


def test_undo_on_the_transformers_backend_equals_a_fresh_prefill(tiny_gpt2_dir):
    """transformers 5's DynamicCache.crop refuses a positive size; the adapter crops by a count instead."""
    lm = decodelab.load(tiny_gpt2_dir)
    session = lm.session("Hello world", seed=3)
    for _ in range(4):
        session.step()
    session.undo(2)
    fresh = lm.next_token_distribution(session.prompt_ids + session.token_ids)
    torch.testing.assert_close(session.distribution().probs, fresh.probs, rtol=1e-4, atol=1e-6)
