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


def test_rotary_tables_equal_the_per_step_computation(bundled, tiny_llama_dir):
    """The cached cos/sin tables (grown past their first 256 rows) are bit-identical to computing them per step."""

    def rotate_half(x):
        return torch.cat((-x[..., x.shape[-1] // 2 :], x[..., : x.shape[-1] // 2]), dim=-1)

    for model in (bundled.backend, decodelab.load(tiny_llama_dir, backend="native").backend):
        cos, signed_sin = model._rotary(700)  # (P, 1, D)
        assert cos.shape[0] >= 700
        x = torch.randn(700, 1, cos.shape[-1], generator=torch.Generator().manual_seed(3))
        for start, steps in [(0, 19), (19, 1), (255, 3), (256, 1), (511, 1), (600, 100)]:
            positions = torch.arange(start, start + steps, dtype=torch.float)
            freqs = positions[:, None] * model.inv_freq[None, :]
            angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # (T, 1, D), as transformers computes it per step
            rows, at = x[start : start + steps], slice(start, start + steps)
            assert torch.equal(cos[at], angles.cos())
            ours = rows * cos[at] + rows.roll(cos.shape[-1] // 2, dims=-1) * signed_sin[at]  # what forward does
            assert torch.equal(ours, rows * angles.cos() + rotate_half(rows) * angles.sin())


def test_stacked_projections_keep_checkpoint_names_and_share_memory(tiny_llama_dir):
    model = decodelab.load(tiny_llama_dir, backend="native").backend
    names = set(model.state_dict())
    assert {"layers.0.self_attn.q_proj.weight", "layers.1.mlp.up_proj.weight"} <= names
    assert not any("qkv" in name or "gate_up" in name for name in names)
    attn, mlp = model.layers[0].self_attn, model.layers[0].mlp
    assert attn.q_proj.weight.data_ptr() == attn.qkv.weight.data_ptr()
    assert torch.equal(attn.qkv.weight[-attn.v_proj.weight.shape[0] :], attn.v_proj.weight)
    assert torch.equal(mlp.gate_up.weight[mlp.gate_proj.weight.shape[0] :], mlp.up_proj.weight)


def test_outputs_and_forked_caches_are_ordinary_tensors(tiny_llama_dir):
    """The layers run in inference mode; callers still get logits they may edit and caches they may fork."""
    import copy

    backend = decodelab.load(tiny_llama_dir, backend="native").backend
    ids = torch.randint(0, backend.vocab_size, (2, 9), generator=torch.Generator().manual_seed(4))
    cache = backend.new_cache(2)
    logits = backend.forward(ids, cache)
    assert not logits.is_inference()
    logits[:, -1, 0] = float("-inf")  # in place, outside inference mode
    twin = copy.deepcopy(cache)
    twin.reorder(torch.tensor([1, 0]))
    step = ids[:, :1]
    ours, theirs = backend.forward(step, cache), backend.forward(step.flip(0), twin)
    torch.testing.assert_close(ours, theirs.flip(0))
    assert cache.length == twin.length == 10
