"""The llama-cpp-python server the remote backend's tests drive (tests/llama_server.py) starts on the bundled GGUF,
answers a greedy completion with logprobs, and is gone afterwards."""

from __future__ import annotations

import math

import httpx
import pytest

from decodelab.gguf_cache import bundled_gguf_path
from llama_server import NOT_INSTALLED, llama_server, server_installed

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not server_installed(), reason=NOT_INSTALLED)]


def test_a_greedy_completion_with_logprobs_and_the_server_stops_after():
    with llama_server(bundled_gguf_path()) as server:
        listed = httpx.get(f"{server.url}/v1/models", timeout=30).json()
        request = {
            "model": server.model,
            "prompt": "The capital of France is",
            "max_tokens": 4,
            "temperature": 0,
            "repeat_penalty": 1.0,  # llama-cpp-python's default is 1.1, which would change the argmax
            "logprobs": 3,
        }
        answer = httpx.post(f"{server.url}/v1/completions", json=request, timeout=120)
        process = server.process

    assert [entry["id"] for entry in listed["data"]] == [server.model] == [bundled_gguf_path().stem]
    assert answer.status_code == 200, answer.text
    choice = answer.json()["choices"][0]
    logprobs = choice["logprobs"]
    assert choice["text"] == "".join(logprobs["tokens"])
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 4
    for token, logprob, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        # greedy: the token taken is the likeliest of the alternatives reported, with that log-probability
        assert top[token] == logprob == max(top.values())
        assert len(top) == 3 and all(value <= 0 for value in top.values())
        assert math.fsum(math.exp(value) for value in top.values()) <= 1 + 1e-6
    assert process.poll() is not None  # stopped on leaving the block


def test_a_server_that_cannot_start_is_one_error_with_its_log(tmp_path):
    missing = tmp_path / "missing.gguf"
    with pytest.raises(RuntimeError, match="server exited with") as raised, llama_server(missing):
        pass
    assert str(missing) in str(raised.value)  # the end of its log says which file it could not load
