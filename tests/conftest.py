"""Shared fixtures: the bundled model (ours and the same weights through transformers) and tiny random models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import decodelab


@pytest.fixture(scope="session")
def bundled() -> decodelab.LM:
    """The bundled SmolLM2 on decodelab's native backend (converted on first use)."""
    return decodelab.load()


@pytest.fixture(scope="session")
def bundled_hf(bundled):
    """The very same converted weights, loaded by transformers' own LlamaForCausalLM: the reference."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(bundled.path, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def make_tiny_llama(tmp_path_factory, bundled):
    """Builds a random 2-layer Llama with grouped-query attention (widths 64 and 128, divisible by int4's groups),
    saved with SmolLM2's tokenizer; keyword arguments change its transformers `LlamaConfig`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    def make(name: str, **changes) -> Path:
        torch.manual_seed(0)
        settings = dict(
            vocab_size=bundled.tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=False,
            rope_theta=10000.0,
            eos_token_id=2,
            bos_token_id=1,
        )
        directory = tmp_path_factory.mktemp(name)
        LlamaForCausalLM(LlamaConfig(**{**settings, **changes})).save_pretrained(directory)
        for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            shutil.copy(bundled.path / file, directory / file)
        return directory

    return make


@pytest.fixture(scope="session")
def tiny_llama_dir(make_tiny_llama) -> Path:
    """A random 2-layer Llama with grouped-query attention and an untied head, saved with SmolLM2's tokenizer."""
    return make_tiny_llama("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A random 2-layer GPT-2 with the real GPT-2 BPE tokenizer: exercises the transformers backend."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from gpt2_bpe import gpt2_tokenizer

    torch.manual_seed(0)
    tokenizer = gpt2_tokenizer()
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=64, n_layer=2, n_head=4))
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def server(bundled):
    """decodelab's server on the bundled model, running on a free loopback port for the whole session."""
    from live_server import live_server

    with live_server(bundled, max_queue=8) as running:
        yield running


@pytest.fixture(scope="module")
def module_server(bundled):
    """A server on the bundled model for one test module alone: the browser tests' pages hold explorer sessions,
    and on the session-wide `server` they would fill its store (--max-sessions, 32) for the modules after them."""
    from live_server import live_server

    with live_server(bundled, max_queue=8) as running:
        yield running


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models are dispatch-bound: one torch thread is as fast, and does not fight other work for the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def served(tmp_path_factory):
    """`decodelab serve` on the bundled model as a subprocess, as a user runs it: (root URL, model name, process)."""
    from serve_process import decodelab_serve

    with decodelab_serve(tmp_path_factory.mktemp("served")) as (url, model, process):
        yield url, model, process


@pytest.fixture(scope="session")
def remote(served):
    """The served model driven through its OpenAI API: `decodelab.load("http://.../v1")`."""
    return decodelab.load(served[0] + "/v1")
