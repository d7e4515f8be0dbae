"""load(): the bundled model and its conversion cache, local directories, GGUF files, hub ids offline."""

import json

import pytest
import torch

import decodelab
from decodelab.gguf_cache import COMPLETE_MARKER, is_complete, write_directory_atomically


def test_bundled_metadata(bundled):
    assert bundled.name == "SmolLM2-135M-Instruct"
    assert bundled.source == "bundled"
    assert bundled.context_length == 8192
    assert bundled.dtype == torch.float32
    assert bundled.tokenizer.token_to_id("<|im_end|>") in bundled.eos_ids
    assert is_complete(bundled.path)
    marker = json.loads((bundled.path / COMPLETE_MARKER).read_text())
    assert marker["source"].endswith(".gguf") and marker["dtype"] == "float32"
    config = json.loads((bundled.path / "config.json").read_text())
    assert "quantization_config" not in config  # the GGUF marker was removed before saving


def test_interrupted_write_leaves_nothing_loadable(tmp_path):
    target = tmp_path / "models" / "some-model"

    def crash_midway(partial):
        (partial / "config.json").write_text("{}")
        (partial / "model.safetensors").write_bytes(b"half a file")
        raise RuntimeError("killed mid-conversion")

    with pytest.raises(RuntimeError):
        write_directory_atomically(target, crash_midway)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the partial directory is gone too

    write_directory_atomically(target, lambda partial: (partial / "config.json").write_text("{}") and {"ok": True})
    assert is_complete(target) and (target / "config.json").read_text() == "{}"


def test_incomplete_directory_from_an_old_run_is_replaced(tmp_path):
    target = tmp_path / "models" / "some-model"
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"stale half file")
    assert not is_complete(target)
    write_directory_atomically(target, lambda partial: (partial / "config.json").write_text("{}") and {})
    assert is_complete(target) and not (target / "model.safetensors").exists()


def test_bfloat16_load(bundled):
    lm = decodelab.load(dtype="bfloat16")
    assert lm.dtype == torch.bfloat16
    assert lm.next_token_distribution("The capital of France is").top(1)[0].piece == " Paris"


def test_transformers_backend_on_a_local_gpt2_directory(tiny_gpt2_dir):
    from transformers import AutoModelForCausalLM

    lm = decodelab.load(tiny_gpt2_dir)
    assert type(lm.backend).__name__ == "TransformersBackend" and lm.source == "directory"
    assert lm.context_length == 128
    assert lm.tokenize("Transformers are the").ids == [41762, 364, 389, 262]
    reference = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    ids = torch.tensor([[41762, 364, 389, 262]])
    with torch.no_grad():
        expected = torch.softmax(reference(ids).logits[0, -1], dim=-1)
    torch.testing.assert_close(lm.next_token_distribution("Transformers are the").probs, expected)
    assert 50256 in lm.stop_ids()


@pytest.mark.parametrize(
    "name, message",
    [
        ("/no/such/dir", "no such model file or directory"),
        ("./missing-model", "no such model file or directory"),
        ("missing.gguf", "no such model file or directory"),
    ],
)
def test_missing_paths(name, message):
    with pytest.raises(decodelab.DecodelabError, match=message):
        decodelab.load(name)


def test_corrupt_gguf_files(tmp_path, monkeypatch):
    monkeypatch.setenv("DECODELAB_HOME", str(tmp_path / "home"))
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("this is not a model")
    with pytest.raises(decodelab.DecodelabError, match="is not a GGUF file"):
        decodelab.load(not_gguf)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 10)
    with pytest.raises(decodelab.DecodelabError, match="cannot read GGUF file .*truncated.gguf"):
        decodelab.load(truncated)
    assert not any(path.name.startswith("truncated") for path in (tmp_path / "home" / "models").iterdir())


def test_other_files_and_options_are_rejected(tmp_path):
    text_file = tmp_path / "weights.txt"
    text_file.write_text("x")
    with pytest.raises(decodelab.DecodelabError, match="not a .gguf model"):
        decodelab.load(text_file)
    with pytest.raises(decodelab.DecodelabError, match="dtype must be one of .* got 'float8'"):
        decodelab.load(dtype="float8")
    with pytest.raises(decodelab.DecodelabError, match="backend must be one of .* got 'onnx'"):
        decodelab.load(backend="onnx")
    with pytest.raises(decodelab.DecodelabError, match="has no config.json"):
        decodelab.load(tmp_path)


def test_uncached_hub_id_offline_fails_fast_with_advice(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        decodelab.DecodelabError, match=r"'gpt2' is not in the local Hugging Face cache .*hf download gpt2"
    ):
        decodelab.load("gpt2")


def test_unreachable_hub_is_detected_without_retries(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    started = time.perf_counter()
    with pytest.raises(decodelab.DecodelabError, match="cannot be reached"):
        decodelab.load("naver-hyperclovax/HyperCLOVAX-SEED-Text-Instruct-0.5B")
    assert time.perf_counter() - started < 5
