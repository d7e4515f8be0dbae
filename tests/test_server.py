"""decodelab's server beyond the OpenAI routes: explorer endpoints, bad requests, the queue bound, cancelled
streams, the API key, and the `decodelab serve` command."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import os
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from live_server import live_server


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def sse_events(lines) -> list[tuple[str, dict]]:
    events, name = [], "message"
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
            events.append((name, data if data == "[DONE]" else json.loads(data)))
            name = "message"
    return events


def test_next_sends_the_raw_logits_and_the_chain_distribution(http, bundled):
    reply = http.post("/api/next", json={"prompt": "The capital of France is", "config": {"top_k": 5}})
    assert reply.status_code == 200
    body = reply.json()
    logits = np.frombuffer(base64.b64decode(body["next"]["logits"]), dtype="<f4")
    expected = bundled.next_token_distribution("The capital of France is")
    assert logits.shape == (bundled.backend.vocab_size,)
    assert np.allclose(logits, expected.logits.numpy(), atol=1e-5)
    after = body["next"]["after"]
    assert [c["id"] for c in after] == [c.id for c in expected.top(5)]
    top5 = expected.probs.topk(5).values
    assert [c["prob"] for c in after] == pytest.approx((top5 / top5.sum()).tolist(), abs=1e-6)
    assert (
        [t["id"] for t in body["prompt"]["tokens"]]
        == body["prompt"]["ids"]
        == bundled.tokenizer.encode("The capital of France is")
    )


def test_session_step_append_undo_generate(http, server, bundled):
    state = http.post("/api/sessions", json={"prompt": "안녕하세요", "config": {"seed": 1}}).json()
    sid, owner = state["id"], {"X-Session-Secret": state["secret"]}
    greedy = http.post(f"/api/sessions/{sid}/step", json={"greedy": True}, headers=owner).json()
    assert greedy["step"]["id"] == bundled.generate("안녕하세요", greedy=True, max_new_tokens=1).token_ids[0]
    forced = http.post(f"/api/sessions/{sid}/append", json={"token_id": 42}, headers=owner).json()
    assert forced["step"]["forced"] and forced["state"]["steps"][-1]["id"] == 42
    undone = http.post(f"/api/sessions/{sid}/undo", json={"count": 1}, headers=owner).json()
    assert [s["id"] for s in undone["removed"]] == [42] and len(undone["state"]["steps"]) == 1
    ran = http.post(
        f"/api/sessions/{sid}/generate", json={"count": 6, "config": {"temperature": 0.7, "top_p": 0.9}}, headers=owner
    ).json()
    assert len(ran["steps"]) <= 6 and len(ran["state"]["steps"]) == 1 + len(ran["steps"])
    if len(ran["steps"]) < 6:
        assert ran["state"]["stop_reason"] is not None
    # The page's sampled steps are reproducible: the session's saved trace replays to the same tokens.
    from decodelab.session import Session

    session = server.state.sessions.get(sid, state["secret"]).session
    assert Session.replay(bundled, session.save()).token_ids == session.token_ids


def test_trace_stream_sends_every_step_then_the_result(http, bundled):
    body = {"prompt": "Once upon a time", "config": {"max_new_tokens": 6, "seed": 2, "temperature": 0.9}}
    with http.stream("POST", "/api/trace", json=body) as reply:
        assert reply.status_code == 200
        events = sse_events(reply.iter_lines())
    expected = bundled.generate("Once upon a time", max_new_tokens=6, seed=2, temperature=0.9)
    assert [data for name, data in events if name == "step"] == json.loads(
        json.dumps([step.to_dict() for step in expected.steps])
    )
    assert events[-1][0] == "result" and events[-1][1]["text"] == expected.text


@pytest.mark.parametrize(
    "path, body, status, says",
    [
        ("/v1/chat/completions", b"{not json", 400, "not valid JSON"),
        (
            "/v1/chat/completions",
            {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": "x"}], "top_p": 1.5},
            400,
            "top_p",
        ),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": "x", "max_tokens": 10**9}, 400, "max_tokens"),
        ("/v1/completions", {"model": "no-such-model", "prompt": "x"}, 404, "no-such-model"),
        ("/v1/chat/completions", {"model": "SmolLM2-135M-Instruct", "messages": []}, 400, "messages"),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": ""}, 400, "prompt is empty"),
        (
            "/v1/completions",
            {"model": "SmolLM2-135M-Instruct", "prompt": "x", "temperature": "hot"},
            400,
            "temperature",
        ),
        (
            "/v1/completions",
            {"model": "SmolLM2-135M-Instruct", "prompt": "x", "logit_bias": {"a": 1}},
            400,
            "logit_bias",
        ),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": "x", "top-k": 3}, 400, "top-k"),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": "x " * 9000}, 400, "8192"),
        ("/api/next", {"prompt": "x", "config": {"top_p": 1.5}}, 400, "top_p"),
        ("/api/sessions", {"prompt": ""}, 400, "prompt is empty"),
        ("/api/sessions/nope/step", {}, 404, "no session"),
        ("/v1/nothing", {}, 404, "no such endpoint"),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": [999999]}, 400, "outside the vocabulary"),
        ("/v1/completions", {"model": "SmolLM2-135M-Instruct", "prompt": 123}, 400, "prompt: expected str or"),
        (
            "/v1/completions",
            {"model": "SmolLM2-135M-Instruct", "prompt": "x", "stream": True, "logit_bias": {"999999": 1}},
            400,
            "999999",
        ),
        (
            "/v1/chat/completions",
            {
                "model": "SmolLM2-135M-Instruct",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            400,
            "should be 'text'",
        ),
        ("/v1/completions", [1, 2], 400, "must be a JSON object"),
        ("/api/sessions", {"prompt": [999999]}, 400, "outside the vocabulary"),
        ("/api/next", {"prompt": "x", "config": {"logit_bias": {"a": 1}}}, 400, "logit_bias keys must be token ids"),
        ("/api/next", {"prompt": "x", "config": {"stop": 5}}, 400, "stop must be a list"),
        ("/api/trace", {"prompt": "x", "config": {"logit_bias": {"999999": 1}}}, 400, "999999"),
    ],
)
def test_bad_requests_get_one_clear_openai_style_error(http, path, body, status, says):
    if isinstance(body, bytes):
        reply = http.post(path, content=body, headers={"content-type": "application/json"})
    else:
        reply = http.post(path, json=body)
    assert reply.status_code == status
    error = reply.json()["error"]
    assert says in error["message"] and "\n" not in error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    # ... and the server keeps serving.
    assert http.get("/v1/models").status_code == 200


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def live_generations() -> int:
    from decodelab.engine import Generation

    gc.collect()
    return sum(type(obj) is Generation for obj in gc.get_objects())


@contextlib.contextmanager
def cpu_hog():
    """Another process keeping a core busy for the duration of the block."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        hog.kill()
        hog.wait()


@pytest.mark.slow
def test_sixteen_streams_with_room_for_eight_complete_or_get_429(bundled):
    """Every request either streams exactly the engine's output or is turned away with 429; none hangs,
    and afterwards no generation (with its KV cache) is left alive and memory is back near its baseline."""
    chat = [{"role": "user", "content": "Write a word."}]

    async def one(client: httpx.AsyncClient, seed: int):
        body = {"model": bundled.name, "messages": chat, "max_tokens": 12, "seed": seed, "stream": True}
        async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
            if reply.status_code != 200:
                return seed, reply.status_code, (await reply.aread()).decode()
            text = ""
            async for line in reply.aiter_lines():
                if line.startswith("data: {"):
                    choice = json.loads(line[6:])["choices"][0]
                    text += choice["delta"].get("content") or ""
            return seed, 200, text

    async def crowd(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            return await asyncio.wait_for(asyncio.gather(*(one(client, seed) for seed in range(16))), 120)

    with live_server(bundled, max_batch=4, max_queue=4) as running:  # 8 admitted: 4 running, 4 waiting
        asyncio.run(crowd(running.url))  # warm-up: allocator pools and caches reach their working size
        baseline = rss_bytes()
        with cpu_hog():  # CI machines are loaded: the outcome must not depend on an idle one
            outcomes = asyncio.run(crowd(running.url))
        stats = running.state.runner.stats
        assert stats.active == 0 and stats.kv_tokens == 0  # slots come back before a client has its last frame
    served = [(seed, text) for seed, status, text in outcomes if status == 200]
    refused = [text for _, status, text in outcomes if status == 429]
    assert len(served) + len(refused) == 16
    assert 8 <= len(served) < 16 and refused
    assert all("busy" in json.loads(text)["error"]["message"] for text in refused)
    for seed, text in served[:4]:
        assert text == bundled.generate(chat, chat=True, seed=seed, max_new_tokens=12).text
    assert live_generations() == 0
    assert rss_bytes() - baseline < 64 * 2**20


def test_a_body_without_a_json_content_type_is_one_clear_error(http):
    reply = http.post("/v1/completions", content=b'{"model": "SmolLM2-135M-Instruct", "prompt": "x"}')
    assert reply.status_code == 400 and "Content-Type: application/json" in reply.json()["error"]["message"]


def test_completion_text_offsets_index_the_text_even_inside_korean_characters(http, bundled):
    body = {"model": bundled.name, "prompt": "한국의 수도는", "max_tokens": 12, "temperature": 0, "logprobs": 1}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    offsets, text = choice["logprobs"]["text_offset"], choice["text"]
    assert offsets == sorted(offsets) and offsets[-1] <= len(text)
    assert any(token.startswith("bytes:\\x") for token in choice["logprobs"]["tokens"])  # the case that went wrong
    chosen = zip(choice["logprobs"]["tokens"], choice["logprobs"]["token_logprobs"], choice["logprobs"]["top_logprobs"])
    assert all(top[token] == logprob for token, logprob, top in chosen)  # the chosen token is always listed
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as reply:
        streamed = [c for name, data in sse_events(reply.iter_lines()) if data != "[DONE]" for c in data["choices"]]
    assert [o for c in streamed if c["logprobs"] for o in c["logprobs"]["text_offset"]] == offsets


def test_completions_default_to_16_tokens(http, bundled):
    body = {
        "model": bundled.name,
        "prompt": "Once upon a time",
        "logit_bias": {str(i): -100 for i in bundled.stop_ids()},
    }
    assert http.post("/v1/completions", json=body).json()["usage"]["completion_tokens"] == 16


def wait_until_idle(stats, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (stats.cancelled == 0 or stats.active) and time.monotonic() < deadline:
        time.sleep(0.05)


def endless_count(bundled, prompt: str = "Count: 1, 2, 3,", stream: bool = False) -> dict:
    """A completion that would run for 4000 tokens unless it is cancelled."""
    return {
        "model": bundled.name,
        "prompt": prompt,
        "max_tokens": 4000,
        "stream": stream,
        "logit_bias": {str(i): -100 for i in bundled.stop_ids()},
    }


def assert_cancelled_and_stopped(stats, most_tokens: int) -> None:
    wait_until_idle(stats)
    assert stats.cancelled == 1 and stats.active == 0 and stats.completed == 0 and stats.failed == 0
    tokens = stats.tokens
    time.sleep(0.5)
    assert stats.tokens == tokens < most_tokens  # stopped long before 4000


def test_a_client_that_leaves_a_non_streaming_request_cancels_it(bundled):
    with live_server(bundled) as running:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(running.url + "/v1/completions", json=endless_count(bundled), timeout=1.5)
        assert_cancelled_and_stopped(running.state.runner.stats, 400)


def test_a_client_that_disconnects_mid_stream_cancels_its_generation(bundled):
    with live_server(bundled) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            with client.stream("POST", "/v1/completions", json=endless_count(bundled, stream=True)) as reply:
                lines = reply.iter_lines()
                received = [line for line, _ in zip(lines, range(6))]
        assert len(received) == 6
        assert_cancelled_and_stopped(running.state.runner.stats, 200)


def test_a_client_that_hangs_up_on_the_headers_is_counted_as_cancelled(bundled):
    # a long prompt (prefill over several ticks); the client leaves as soon as the headers arrive, reading nothing
    prompt = "Count: " + ", ".join(str(i) for i in range(1, 700))
    with live_server(bundled) as running:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            with client.stream("POST", "/v1/completions", json=endless_count(bundled, prompt, True)) as reply:
                assert reply.status_code == 200
        assert_cancelled_and_stopped(running.state.runner.stats, 200)


def test_api_key_is_required_when_set(bundled):
    import openai

    with live_server(bundled, api_key="sesame") as running:
        anonymous = openai.OpenAI(base_url=running.url + "/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="API key is wrong"):
            anonymous.models.list()
        assert httpx.post(running.url + "/api/next", json={"prompt": "x"}).status_code == 401
        assert httpx.get(running.url + "/").status_code == 200  # the page itself asks for the key
        allowed = openai.OpenAI(base_url=running.url + "/v1", api_key="sesame", max_retries=0)
        assert allowed.completions.create(model=bundled.name, prompt="Hi", max_tokens=2).choices
        lowercase = httpx.get(running.url + "/v1/models", headers={"authorization": "bearer sesame"})
        assert lowercase.status_code == 200  # the scheme is case-insensitive (RFC 7235)


@pytest.mark.slow
def test_decodelab_serve_command_answers_on_loopback(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "decodelab",
        "serve",
        "--port",
        str(port),
        "--max-queue",
        "2",
        "--max-batch-tokens",
        "5000",
    ]
    key = {"authorization": "Bearer sesame"}  # from the environment: a key on the command line shows in `ps`
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DECODELAB_API_KEY": "sesame"},
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=key, timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise AssertionError("decodelab serve did not answer within 60 s")
        assert models["data"][0]["id"] == "SmolLM2-135M-Instruct"
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401
        info = httpx.get(f"http://127.0.0.1:{port}/api/info", headers=key).json()
        assert info["max_queue"] == 2 and info["limits"]["max_batch_tokens"] == 5000 and info["api_key_required"]
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_serve_with_a_bad_port_is_one_line():
    run = subprocess.run(
        [sys.executable, "-m", "decodelab", "serve", "--port", "70000"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "65535" in run.stderr


def test_serve_with_a_missing_model_is_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "decodelab", "serve", "--model", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.count("\n") == 1 and "nope" in run.stderr


def test_beam_and_compare_start_from_token_ids_a_text_could_not_give(http, bundled):
    """A session's position can end inside a Korean character: its ids, not their decoded text, are the prompt."""
    ids = bundled.tokenizer.encode("한국의 수도는")[:-1] + bundled.tokenizer.encode("지")[:1]  # a partial character
    assert bundled.tokenizer.encode(bundled.tokenizer.decode(ids)) != ids  # the text would be another prompt
    beam = http.post("/api/beam", json={"prompt": ids, "num_beams": 2, "max_new_tokens": 3}).json()
    expected = bundled.beam_search(ids, num_beams=2, max_new_tokens=3)
    assert beam["sequences"][0]["token_ids"] == expected.sequences[0].token_ids
    compared = http.post("/api/compare", json={"prompt": ids, "strategies": "greedy", "max_new_tokens": 3}).json()
    greedy = bundled.generate(ids, greedy=True, max_new_tokens=3, stop_token_ids=())
    assert compared["outcomes"][0]["token_ids"] == greedy.token_ids
    outside = http.post("/api/beam", json={"prompt": [bundled.backend.vocab_size], "num_beams": 2})
    assert outside.status_code == 400 and "outside the vocabulary" in outside.json()["error"]["message"]
