"""The server as an attacker or a careless classroom would try it: every hostile request is one clear 4xx in
OpenAI's error shape (never a 500, never a traceback), and the server then answers a normal request."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

M = "SmolLM2-135M-Instruct"
HUGE = "99999999999999999999999"
NESTED = b"[" * 100_000 + b"]" * 100_000


def raw(text: str) -> bytes:
    """A JSON body written by hand (json.dumps would escape or refuse what these requests send)."""
    return text.encode("utf-8")


def completion(**fields) -> dict:
    return {"model": M, "prompt": "Hello", "max_tokens": 2, **fields}


def chat(**fields) -> dict:
    return {"model": M, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, **fields}


# (method, path, body (dict, raw bytes or None), extra headers, status, words the message holds)
HOSTILE = [
    # text that is not Unicode: a lone surrogate anywhere a string goes
    ("POST", "/v1/completions", raw(f'{{"model": "{M}", "prompt": "\\ud800"}}'), {}, 400, "lone UTF-16 surrogate"),
    (
        "POST",
        "/v1/chat/completions",
        raw(f'{{"model": "{M}", "messages": [{{"role": "user", "content": "a\\udc00"}}]}}'),
        {},
        400,
        "messages.0.content",
    ),
    ("POST", "/v1/completions", raw(f'{{"model": "{M}", "prompt": "x", "stop": ["\\ud83d"]}}'), {}, 400, "stop.0"),
    ("POST", "/api/tokenize", raw('{"prompt": "\\ud800"}'), {}, 400, "lone UTF-16 surrogate"),
    ("POST", "/api/trace", raw('{"prompt": "x\\ud800"}'), {}, 400, "prompt"),
    ("POST", "/api/score", raw('{"text": "\\udfff"}'), {}, 400, "text"),
    ("POST", "/api/next", raw('{"prompt": "x", "config": {"stop": ["\\ud800"]}}'), {}, 400, "config.stop.0"),
    ("POST", "/api/sessions/{sid}/append", raw('{"text": "\\ud800"}'), {}, 400, "text"),
    ("POST", "/v1/completions", b'{"prompt": "\xff\xfe"}', {}, 400, "not UTF-8"),
    # ids and numbers no model has
    ("POST", "/v1/completions", completion(logit_bias={HUGE: 1}), {}, 400, "token id"),
    ("POST", "/v1/completions", completion(logit_bias={"²": 1}), {}, 400, "token id"),
    ("POST", "/v1/completions", completion(logit_bias={"-5": 1}), {}, 400, "token id"),
    (
        "POST",
        "/v1/completions",
        raw(f'{{"model": "{M}", "prompt": "x", "logit_bias": {{"5": NaN}}}}'),
        {},
        400,
        "logit_bias",
    ),
    (
        "POST",
        "/v1/completions",
        raw(f'{{"model": "{M}", "prompt": "x", "temperature": Infinity}}'),
        {},
        400,
        "temperature",
    ),
    ("POST", "/v1/completions", completion(n=10**30), {}, 400, "n"),
    ("POST", "/v1/completions", completion(max_tokens=-1), {}, 400, "max_tokens"),
    ("POST", "/v1/completions", completion(seed=2**70), {}, 400, "seed"),
    ("POST", "/v1/completions", completion(prompt=[10**30]), {}, 400, "outside the vocabulary"),
    ("POST", "/v1/completions", completion(prompt=[1] * 9000), {}, 400, "8192"),
    ("POST", "/v1/chat/completions", chat(logprobs=True, top_logprobs=1000), {}, 400, "top_logprobs"),
    ("POST", "/api/next", {"prompt": "x", "config": {"logit_bias": {HUGE: 1}}}, {}, 400, "token id"),
    ("POST", "/api/next", {"prompt": "x", "config": {"logit_bias": {"²": 1}}}, {}, 400, "token id"),
    ("POST", "/api/next", {"prompt": "x", "config": {"top_n": 10**9}}, {}, 400, "top_n must be at most 100"),
    ("POST", "/api/next", {"prompt": "x", "config": {"max_new_tokens": "lots"}}, {}, 400, "max_new_tokens"),
    ("POST", "/api/next", {"prompt": "x", "config": {"seed": -1}}, {}, 400, "seed"),
    ("POST", "/api/next", {"prompt": "x", "config": {"samplers": ["nope"]}}, {}, 400, "nope"),
    ("POST", "/api/next", {"prompt": "x", "config": {"ban": [HUGE]}}, {}, 400, "ban"),
    ("POST", "/api/trace", {"prompt": "x", "config": {"ban": list(range(49152))}}, {}, 400, "removed every token"),
    ("POST", "/v1/completions", completion(temperature=1e-40), {}, 400, "temperature"),
    ("POST", "/v1/completions", completion(repetition_penalty=5e-324), {}, 400, "repetition_penalty"),
    (
        "POST",
        "/api/trace",
        {"prompt": "x", "config": {"logit_bias": {"28": 1e39, "29": 1e39}}},
        {},
        400,
        "logit_bias must map token ids",
    ),
    ("POST", "/api/sessions/{sid}/append", {"token_id": 10**30}, {}, 400, "token"),
    ("POST", "/api/sessions/{sid}/append", {"token_id": -1}, {}, 400, "token"),
    ("POST", "/api/sessions/{sid}/undo", {"count": 10**9}, {}, 400, "undo"),
    ("POST", "/api/sessions/{sid}/generate", {"count": 10**9}, {}, 400, "count"),
    # shapes the routes do not take
    ("POST", "/v1/completions", completion(prompt=[False, True]), {}, 400, "prompt"),
    ("POST", "/v1/completions", completion(stream=0), {}, 400, "stream"),
    ("POST", "/v1/completions", completion(temperature="0.7"), {}, 400, "temperature"),
    ("POST", "/api/sessions/{sid}/append", {"token_id": False}, {}, 400, "token_id"),
    ("POST", "/api/tokenize", {"messages": [{"role": "user", "content": 5}]}, {}, 400, "content"),
    ("POST", "/api/tokenize", {"prompt": [1, 2, 3]}, {}, 400, "token ids"),
    ("POST", "/v1/chat/completions", chat(messages=[{"role": "wizard", "content": "x"}]), {}, 400, "role"),
    ("POST", "/v1/chat/completions", chat(messages=[{"role": "user", "content": 5}]), {}, 400, "content"),
    ("POST", "/api/next", {"prompt": None, "messages": []}, {}, 400, "messages is empty"),
    ("POST", "/v1/completions", NESTED, {}, 400, "nests JSON too deeply"),
    (
        "POST",
        "/v1/completions",
        json.dumps(completion()).encode(),
        {"content-type": "text/plain"},
        400,
        "Content-Type: application/json",
    ),
    ("GET", "/v1/completions", None, {}, 405, "Method Not Allowed"),
    ("POST", "/api/sessions/nope/step", {}, {}, 404, "no session"),
    # more than the server allows: memory is priced before anything is allocated
    (
        "POST",
        "/api/compare",
        {"prompt": "The capital of France is", "strategies": "beam:2000", "max_new_tokens": 3},
        {},
        400,
        "at most 16 beams",
    ),
    ("POST", "/api/compare", {"prompt": "x", "strategies": "; ".join(["greedy"] * 20)}, {}, 400, "at most 8"),
    ("POST", "/api/beam", {"prompt": "x", "num_beams": 2000}, {}, 400, "at most 16 beams"),
    ("POST", "/v1/completions", completion(n=16, max_tokens=8000), {}, 400, "KV-cache tokens"),
    ("POST", "/api/trace", {"prompt": "x", "n": 16, "config": {"max_new_tokens": 8000}}, {}, 400, "KV-cache tokens"),
    ("POST", "/v1/completions", completion(prompt="x" * 250_000), {}, 400, "--max-prompt-chars"),
    ("POST", "/api/score", {"text": "가" * 250_000}, {}, 400, "--max-prompt-chars"),
    ("POST", "/v1/completions", b'{"prompt": "' + b"a" * (5 * 2**20) + b'"}', {}, 413, "--max-body-bytes"),
    # sessions belong to whoever started them
    ("POST", "/api/sessions/{sid}/step", {}, {"X-Session-Secret": None}, 403, "X-Session-Secret"),
    ("POST", "/api/sessions/{sid}/step", {}, {"X-Session-Secret": "guess"}, 403, "belongs to the client"),
    ("GET", "/api/sessions/{sid}", None, {"X-Session-Secret": "guess"}, 403, "belongs to the client"),
    ("DELETE", "/api/sessions/{sid}", None, {"X-Session-Secret": None}, 403, "belongs to the client"),
    # a page on another site reaching this server through a rebinding name
    ("POST", "/api/next", {"prompt": "x"}, {"host": "attacker.example"}, 400, "--allowed-hosts"),
    ("GET", "/v1/models", None, {"host": "attacker.example:8000"}, 400, "DNS rebinding"),
]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def owned_session(http):
    state = http.post("/api/sessions", json={"prompt": "Hello there"}).json()
    yield state["id"], state["secret"]
    http.delete(f"/api/sessions/{state['id']}", headers={"X-Session-Secret": state["secret"]})


def send(http: httpx.Client, method: str, path: str, body, headers: dict, session) -> httpx.Response:
    sid, secret = session
    headers = {"X-Session-Secret": secret, **headers}
    headers = {name: value for name, value in headers.items() if value is not None}
    if isinstance(body, bytes):
        headers.setdefault("content-type", "application/json")
        return http.request(method, path.format(sid=sid), content=body, headers=headers)
    return http.request(method, path.format(sid=sid), json=body, headers=headers)


@pytest.mark.parametrize(
    "method, path, body, headers, status, says",
    HOSTILE,
    ids=[f"{i}-{case[0]} {case[1]}" for i, case in enumerate(HOSTILE)],
)
def test_a_hostile_request_is_one_clear_4xx_and_the_server_keeps_serving(
    http, owned_session, method, path, body, headers, status, says
):
    reply = send(http, method, path, body, headers, owned_session)
    assert reply.status_code == status, reply.text[:300]
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert says in error["message"], error["message"]
    assert "\n" not in error["message"] and "Traceback" not in reply.text and 'File "' not in reply.text
    healthy = http.post("/v1/completions", json=completion(max_tokens=1, temperature=0))
    assert healthy.status_code == 200 and healthy.json()["usage"]["completion_tokens"] == 1


def test_there_are_at_least_forty_hostile_cases():
    assert len(HOSTILE) >= 40


def test_busy_answers_carry_retry_after(bundled):
    from live_server import live_server

    with (
        live_server(bundled, max_batch=1, max_queue=1) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        body = {
            "model": M,
            "prompt": "Count: 1, 2,",
            "max_tokens": 200,
            "stream": True,
            "logit_bias": {str(i): -100 for i in bundled.stop_ids()},
        }
        stats = running.state.runner.stats
        with (  # paused after its first token, the stream holds its slot until it is closed: no race with its end
            running.paused_when(lambda: stats.tokens >= 1),
            client.stream("POST", "/v1/completions", json=body) as holding,
        ):
            lines = holding.iter_lines()  # kept: a dropped iterator would close the stream
            next(lines)  # the one running slot is taken
            waiting = threading.Thread(
                target=httpx.post,
                args=(running.url + "/v1/completions",),
                kwargs={"json": {**body, "stream": False, "max_tokens": 4}, "timeout": 120},
            )
            waiting.start()  # the one waiting slot too (its reply comes once the stream above is over)
            while stats.active < 2:
                time.sleep(0.02)
            refused = client.post("/api/next", json={"prompt": "x"})
        assert refused.status_code == 429 and refused.headers["retry-after"].isdigit()
        assert "--max-queue" in refused.json()["error"]["message"]
        waiting.join()
        assert client.post("/api/next", json={"prompt": "x"}).status_code == 200
