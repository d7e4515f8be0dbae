"""decodelab's own Llama forward equals transformers' LlamaForCausalLM, with and without the KV cache."""

import pytest
import torch

import decodelab

PROMPTS = ["The capital of France is", "Transformers are the", "안녕하세요! 오늘 날씨는"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_bundled_logits_equal_transformers(bundled, bundled_hf, prompt):
    ids = torch.tensor([bundled.tokenizer.encode(prompt)])
    ours = bundled.backend.forward(ids)  # (1, T, V)
    with torch.no_grad():
        reference = bundled_hf(ids).logits
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours[0, -1].argmax(), reference[0, -1].argmax())


def test_random_gqa_llama_equals_transformers(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    lm = decodelab.load(tiny_llama_dir, backend="native")
    assert type(lm.backend).__name__ == "NativeLlama"
    reference = AutoModelForCausalLM.from_pretrained(tiny_llama_dir).eval()
    ids = torch.randint(0, lm.backend.vocab_size, (2, 37), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(lm.backend.forward(ids), reference(ids).logits, rtol=1e-4, atol=1e-5)


def test_cached_steps_equal_full_forward(bundled):
    """Prefill, then one token at a time, then a 3-token chunk: every step's logits match a full forward."""
    ids = torch.tensor([bundled.tokenizer.encode("Once upon a time, in a small village, there lived")])
    full = bundled.backend.forward(ids)  # (1, T, V)
    cache = bundled.backend.new_cache(1)
    prefix = 6
    pieces = [bundled.backend.forward(ids[:, :prefix], cache)]
    position = prefix
    while position < ids.shape[1] - 3:
        pieces.append(bundled.backend.forward(ids[:, position : position + 1], cache))
        position += 1
    pieces.append(bundled.backend.forward(ids[:, position:], cache))  # a chunk attending to the cache
    assert cache.length == ids.shape[1]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-4, atol=1e-4)


def test_cache_grows_past_its_first_chunk(tiny_llama_dir):
    lm = decodelab.load(tiny_llama_dir, backend="native")
    ids = torch.randint(0, lm.backend.vocab_size, (1, 256), generator=torch.Generator().manual_seed(2))
    cache = lm.backend.new_cache(1)
    stepped = [lm.backend.forward(ids[:, :250], cache)]
    stepped += [lm.backend.forward(ids[:, t : t + 1], cache) for t in range(250, 256)]
    torch.testing.assert_close(torch.cat(stepped, dim=1), lm.backend.forward(ids[:, :256]), rtol=1e-4, atol=1e-5)


def test_native_refuses_a_non_llama_directory(tiny_gpt2_dir):
    with pytest.raises(decodelab.DecodelabError, match="model_type 'llama'"):
        decodelab.load(tiny_gpt2_dir, backend="native")
