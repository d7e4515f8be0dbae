"""The tiny GPT as a model: byte tokenizer, KV cache parity, engine parity, and every LM feature on a checkpoint."""

from __future__ import annotations

import pytest
import torch

import decodelab
from decodelab.backends.base import Backend
from decodelab.errors import BadInput
from decodelab.tinygpt import TinyGPT, TinyGPTBackend, TinyGPTConfig, byte_tokenizer, load_model, save_model

CONFIG = TinyGPTConfig(block_size=48, n_layer=2, n_head=2, n_embd=32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest


@pytest.fixture(scope="module")
def model() -> TinyGPT:
    torch.manual_seed(0)
    return TinyGPT(CONFIG).eval()


@pytest.fixture(scope="module")
def lm(model, tmp_path_factory) -> decodelab.LM:
    return decodelab.load(save_model(model, tmp_path_factory.mktemp("tiny") / "checkpoint"))


def test_byte_tokenizer_ids_are_the_utf8_bytes_and_korean_round_trips():
    tokenizer = byte_tokenizer()
    text = "Hello, 안녕하세요!\n\t  x"
    ids = tokenizer.encode(text)
    assert ids == list(text.encode("utf-8"))
    assert tokenizer.decode(ids) == text
    assert tokenizer.vocab_size == 256
    assert all(tokenizer.token_bytes(i) == bytes([i]) for i in range(256))
    pieces = [token.piece for token in decodelab.tokenize(tokenizer, "한")]
    assert pieces == ["<0xED>", "<0x95>", "<0x9C>"]  # partial characters shown as bytes, never '�'


def test_the_backend_meets_the_contract(lm, model):
    assert isinstance(lm.backend, TinyGPTBackend) and isinstance(lm.backend, Backend)
    assert lm.source == "tinygpt" and lm.model is not None and lm.context_length == CONFIG.block_size
    logits = lm.backend.forward(torch.tensor([[1, 2, 3]]))
    assert logits.shape == (1, 3, 256) and logits.dtype == torch.float32 and not logits.requires_grad


def test_saved_model_loads_with_identical_logits(model, lm, tmp_path):
    ids = torch.tensor([list(b"The tiny model")])  # (1, T)
    with torch.no_grad():
        expected = model(ids)
    assert torch.equal(load_model(save_model(model, tmp_path / "again"))(ids), expected)
    assert torch.equal(lm.backend.forward(ids), expected)


def test_cached_logits_equal_uncached(model):
    ids = torch.tensor([list(b"cached decoding, one token at a time"), list(b"a second row of the same length!!!!!")])
    with torch.no_grad():
        full = model(ids)  # (B, T, V)
        cache = model.new_cache(2)
        pieces = [model(ids[:, :10], cache)]  # prefill
        pieces.append(model(ids[:, 10:14], cache))  # several new tokens after a past: the offset causal mask
        pieces += [model(ids[:, t : t + 1], cache) for t in range(14, ids.shape[1])]  # one at a time
    assert cache.length == ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cache_crop_and_reorder(model):
    ids = torch.tensor([list(b"abcdefgh"), list(b"ABCDEFGH")])
    with torch.no_grad():
        cache = model.new_cache(2)
        model(ids[:, :6], cache)
        cache.crop(4)  # undo two positions, then go on from there
        cropped = model(ids[:, 4:8], cache)
        cache.reorder(torch.tensor([1, 1]))  # both rows continue the second
        reordered = model(torch.tensor([[ord("I")], [ord("I")]]), cache)
        full = model(torch.tensor([list(b"ABCDEFGHI")]))
    torch.testing.assert_close(cropped, model(ids)[:, 4:8], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reordered[0], full[0, -1:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reordered[1], full[0, -1:], rtol=1e-5, atol=1e-5)


def test_engine_greedy_equals_a_plain_argmax_loop(lm, model):
    prompt = "The engine "
    ids = list(prompt.encode())
    with torch.no_grad():
        for _ in range(24):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))  # full forward each time, no cache
    result = lm.generate(prompt, greedy=True, max_new_tokens=24)
    assert result.token_ids == ids[len(prompt) :]


def test_generation_stops_when_the_context_is_full(lm):
    result = lm.generate("x" * 40, greedy=True, max_new_tokens=100)
    assert result.stop_reason.kind == "context_full"
    assert len(result.token_ids) == CONFIG.block_size - 40 + 1  # the last token is chosen, never fed back


def test_long_prompts_are_one_clear_error(lm, model):
    with pytest.raises(BadInput, match="reads at most 48"):
        lm.generate("y" * 49)
    with pytest.raises(BadInput, match="do not fit the tiny GPT's context of 48"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_sampling_session_score_and_beam_work_on_a_checkpoint(lm, model):
    sampled = lm.generate("Once", temperature=0.9, top_k=20, seed=3, max_new_tokens=12)
    assert sampled.token_ids == lm.generate("Once", temperature=0.9, top_k=20, seed=3, max_new_tokens=12).token_ids
    assert len(sampled.steps) == 12 and all(0 < step.prob <= 1 for step in sampled.steps)

    session = lm.session("Hi", greedy=True)
    first = session.step().token_id
    session.append(" ")
    session.undo(2)
    assert session.step().token_id == first  # back on the model's own path after the forced detour

    score = lm.score(" there", prompt="Hi")
    with torch.no_grad():
        logprobs = model(torch.tensor([list(b"Hi there")]))[0].log_softmax(-1)  # (T, V)
    expected = sum(float(logprobs[t - 1, byte]) for t, byte in enumerate(b"Hi there") if t >= 2)
    assert score.total_logprob == pytest.approx(expected, abs=1e-4)

    beams = lm.beam_search("Hi", num_beams=3, max_new_tokens=6)
    assert len(beams.sequences[0].token_ids) == 6


def test_config_errors_quote_the_bad_value():
    with pytest.raises(BadInput, match="n_embd must be a multiple of n_head, got n_embd=30 and n_head=4"):
        TinyGPTConfig(n_embd=30, n_head=4)
    with pytest.raises(BadInput, match="block_size must be a whole number of at least 1, got 0"):
        TinyGPTConfig(block_size=0)


def test_attention_maps_are_what_the_model_computes(model):
    ids = torch.tensor([list(b"attention pattern")])
    x = model.embeddings(ids)[2]  # (1, T, C)
    block = model.h[0]
    with torch.no_grad():
        weights = block.attn.weights(block.ln_1(x))  # (1, H, T, T)
        _, _, v = block.attn.split_heads(block.ln_1(x))  # (1, H, T, D)
        mixed = (weights @ v).transpose(1, 2).reshape(1, ids.shape[1], -1)  # (1, T, C)
        torch.testing.assert_close(block.attn.c_proj(mixed), block.attn(block.ln_1(x)), rtol=1e-5, atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(1, CONFIG.n_head, ids.shape[1]))
    assert torch.all(weights.triu(diagonal=1) == 0)  # causal: nothing from the future


def test_the_server_serves_a_tiny_gpt(lm):
    from fastapi.testclient import TestClient

    from decodelab.server import create_app

    with TestClient(create_app(lm), base_url="http://localhost") as api:
        reply = api.post(
            "/v1/completions",
            json={"model": lm.name, "prompt": "The ", "max_tokens": 5, "temperature": 0, "logprobs": 2},
        )
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["text"] == lm.generate("The ", greedy=True, max_new_tokens=5).text
    assert len(choice["logprobs"]["token_logprobs"]) == 5
