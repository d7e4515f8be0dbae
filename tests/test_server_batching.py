"""The server batches: concurrent requests share each forward pass, and each gets the answer it gets alone.

Every test drives a real server (uvicorn in this process) over HTTP; nothing here depends on timing beyond
"a request of many tokens is still running while the next few arrive".
"""

from __future__ import annotations

import asyncio
import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

import decodelab
from live_server import live_server
from test_server import cpu_hog, live_generations
from test_server_limits import rss_bytes

LONG_PROMPT = "The history of the printing press. " + " ".join(
    f"In year {1450 + i} the presses of city number {i} printed {i * 7} books." for i in range(24)
)  # ~400 tokens: read in chunks of 128 while the others decode

# Mixed prompts, lengths, samplers, n and stop strings: (route, body). Greedy, seeded, traced and streamed.
REQUESTS = [
    ("chat", {"messages": [{"role": "user", "content": "Name a color."}], "max_tokens": 20, "temperature": 0}),
    ("completions", {"prompt": "The capital of France is", "max_tokens": 24, "temperature": 0, "logprobs": 3}),
    ("completions", {"prompt": "Once upon a time", "max_tokens": 16, "seed": 7, "temperature": 0.8, "top_p": 0.9, "n": 3, "logprobs": 1}),
    ("chat", {"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 30, "seed": 3, "top_k": 20, "stop": [" the", "."]}),
    ("completions", {"prompt": "My favourite food is", "max_tokens": 20, "seed": 5, "min_p": 0.1, "repetition_penalty": 1.3, "stream": True}),
    ("chat", {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12, "temperature": 0, "n": 2, "stream": True}),
    ("completions", {"prompt": "한국의 수도는", "max_tokens": 16, "temperature": 0, "logprobs": 2}),
    ("completions", {"prompt": LONG_PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 1}),
    ("trace", {"prompt": "Water boils at", "n": 2, "config": {"seed": 9, "temperature": 1.0, "max_new_tokens": 12}}),
    ("chat", {"messages": [{"role": "user", "content": "List three animals."}], "max_tokens": 40, "seed": 1, "stop": ["\n"], "stream": True}),
    ("completions", {"prompt": "1, 2, 3,", "max_tokens": 1, "temperature": 0, "logprobs": 5}),
]  # fmt: skip


async def send(client: httpx.AsyncClient, model: str, route: str, body: dict) -> list[dict]:
    """One request; per choice (row): its text, token logprobs (when asked) and why it ended."""
    if route == "trace":
        logprobs: dict[int, list[float]] = {}
        results = []
        async with client.stream("POST", "/api/trace", json=body) as reply:
            assert reply.status_code == 200, await reply.aread()
            name = None
            async for line in reply.aiter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "step":
                    step = json.loads(line[6:])
                    logprobs.setdefault(step["row"], []).append(step["logprob"])
                elif line.startswith("data: ") and name == "result":
                    results.append(json.loads(line[6:]))
        return [
            {"text": (r["text"], r["token_ids"]), "logprobs": logprobs[row], "end": r["stop_reason"]}
            for row, r in enumerate(results)
        ]
    body = {"model": model, **body}
    path = "/v1/chat/completions" if route == "chat" else "/v1/completions"
    if not body.get("stream"):
        reply = await client.post(path, json=body)
        assert reply.status_code == 200, reply.text
        return [_choice(choice, route) for choice in reply.json()["choices"]]
    rows: dict[int, dict] = {}
    async with client.stream("POST", path, json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        async for line in reply.aiter_lines():
            if line.startswith("data: {"):
                for chunk in json.loads(line[6:])["choices"]:
                    row = rows.setdefault(chunk["index"], {"text": "", "logprobs": None, "end": None})
                    row["text"] += (chunk.get("delta") or {}).get("content") or chunk.get("text") or ""
                    row["end"] = chunk["finish_reason"] or row["end"]
    return [rows[index] for index in sorted(rows)]


def _choice(choice: dict, route: str) -> dict:
    text = choice["message"]["content"] if route == "chat" else choice["text"]
    logprobs = choice.get("logprobs")
    if logprobs is not None:
        logprobs = (
            logprobs["token_logprobs"] if "token_logprobs" in logprobs else [t["logprob"] for t in logprobs["content"]]
        )
    return {"text": text, "logprobs": logprobs, "end": choice["finish_reason"]}


def assert_same(batched: list[dict], alone: list[dict]) -> None:
    assert [row["text"] for row in batched] == [row["text"] for row in alone]
    assert [row["end"] for row in batched] == [row["end"] for row in alone]
    for row, solo in zip(batched, alone):
        if solo["logprobs"] is not None:
            assert len(row["logprobs"]) == len(solo["logprobs"])
            assert all(math.isclose(a, b, abs_tol=1e-4) for a, b in zip(row["logprobs"], solo["logprobs"]))


async def leave_early(client: httpx.AsyncClient, model: str, stop_ids: list[int]) -> int:
    """A stream of up to 2000 tokens whose client reads a few chunks and goes away."""
    body = {"model": model, "prompt": "Count: 1, 2, 3,", "max_tokens": 2000, "stream": True}
    body["logit_bias"] = {str(i): -100 for i in stop_ids}
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        lines = 0
        async for line in reply.aiter_lines():
            lines += line.startswith("data: ")
            if lines == 5:
                return lines
    return lines


def wait_for(condition, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.slow
def test_twelve_concurrent_requests_each_get_their_solo_answer(bundled):
    model, stop_ids = bundled.name, sorted(bundled.stop_ids())

    async def alone(url: str) -> list[list[dict]]:
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            return [await send(client, model, route, body) for route, body in REQUESTS]

    async def together(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            jobs = [send(client, model, route, body) for route, body in REQUESTS]
            return await asyncio.gather(*jobs, leave_early(client, model, stop_ids))

    with live_server(bundled, max_batch=16) as running:
        stats = running.state.runner.stats
        solo = asyncio.run(alone(running.url))
        baseline, steps_before, rows_before = rss_bytes(), stats.steps, stats.stepped_rows
        with cpu_hog():  # the outcome must not depend on an idle machine
            *batched, _ = asyncio.run(together(running.url))
        wait_for(lambda: stats.active == 0)
        assert stats.cancelled == 1 and stats.failed == 0
        assert stats.completed == 2 * len(REQUESTS) and stats.admitted == 2 * len(REQUESTS) + 1
        assert (stats.active, stats.running_rows, stats.waiting, stats.kv_tokens) == (0, 0, 0, 0)
        mean_rows = (stats.stepped_rows - rows_before) / (stats.steps - steps_before)
        reported = httpx.get(running.url + "/api/stats").json()
        metrics = httpx.get(running.url + "/metrics").text
    for (_, body), mine, reference in zip(REQUESTS, batched, solo):
        assert len(mine) == body.get("n", 1)
        assert_same(mine, reference)
    assert mean_rows > 2  # they did share forward passes
    assert reported["time_to_first_token"]["p50"] > 0 and reported["inter_token_latency"]["p95"] > 0
    assert 'decodelab_requests_total{outcome="cancelled"} 1' in metrics
    assert f"decodelab_tokens_generated_total {reported['tokens']}" in metrics
    assert live_generations() == 0
    assert rss_bytes() - baseline < 64 * 2**20


def test_beyond_max_batch_plus_max_queue_requests_get_429_with_retry_after(bundled):
    body = {"model": bundled.name, "prompt": "Count: 1, 2, 3,", "max_tokens": 64, "temperature": 0}
    body["logit_bias"] = {str(i): -100 for i in bundled.stop_ids()}

    async def crowd(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            return await asyncio.gather(*(client.post("/v1/completions", json=body) for _ in range(5)))

    with live_server(bundled, max_batch=2, max_queue=1) as running, ThreadPoolExecutor(1) as pool:
        stats = running.state.runner.stats
        with running.paused_when(lambda: True) as pause:  # no request can finish before all five have come
            pause.wait("once")
            crowding = pool.submit(asyncio.run, crowd(running.url))
            wait_for(lambda: stats.admitted + stats.rejected == 5)
        replies = crowding.result()
        wait_for(lambda: stats.active == 0)
        assert stats.completed == 3 and stats.rejected == 2 and stats.admitted == 3
    refused = [reply for reply in replies if reply.status_code == 429]
    assert len(refused) == 2 and all(reply.headers["Retry-After"] == "1" for reply in refused)
    assert "--max-batch 2 + --max-queue 1" in refused[0].json()["error"]["message"]
    texts = {reply.json()["choices"][0]["text"] for reply in replies if reply.status_code == 200}
    assert len(texts) == 1  # the two running together and the one that waited its turn agree


def test_a_session_steps_in_the_batch_beside_running_generations(bundled):
    """A session's steps join the batched step: the tokens equal a session stepped alone, in the library."""
    prompt = "The capital of France is"
    expected = bundled.session(prompt, greedy=True)
    expected_ids = [expected.step().token_id for _ in range(6)]
    body = {"model": bundled.name, "prompt": "Count: 1, 2, 3,", "max_tokens": 48, "temperature": 0}

    async def scenario(url: str):
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:
            others = [asyncio.create_task(client.post("/v1/completions", json=body)) for _ in range(3)]
            started = (await client.post("/api/sessions", json={"prompt": prompt})).json()
            headers = {"X-Session-Secret": started["secret"]}
            url = f"/api/sessions/{started['id']}"
            first = (await client.post(f"{url}/step", json={"greedy": True}, headers=headers)).json()
            rest = (await client.post(f"{url}/generate", json={"greedy": True, "count": 5}, headers=headers)).json()
            await asyncio.gather(*others)
            return [first["step"]["id"]] + [step["id"] for step in rest["steps"]]

    with live_server(bundled) as running:
        ids = asyncio.run(scenario(running.url))
        stats = running.state.runner.stats
        wait_for(lambda: stats.active == 0)
        assert stats.steps < stats.tokens  # generations and the session shared steps
    assert ids == expected_ids


def test_the_tiny_gpt_and_transformers_backends_serve_concurrent_requests(bundled, tiny_gpt2_dir):
    import torch

    from decodelab.tinygpt.backend import TinyGPTBackend
    from decodelab.tinygpt.config import TinyGPTConfig
    from decodelab.tinygpt.model import TinyGPT

    torch.manual_seed(0)
    config = TinyGPTConfig(vocab_size=bundled.tokenizer.vocab_size, block_size=64, n_layer=2, n_head=2, n_embd=32)
    tiny = decodelab.LM("tiny", TinyGPTBackend(TinyGPT(config)), bundled.tokenizer)
    for lm, batches in ((tiny, True), (decodelab.load(tiny_gpt2_dir, backend="transformers"), False)):
        bodies = [
            {"model": lm.name, "prompt": prompt, "max_tokens": 16, "seed": seed, "temperature": 1.0, "logprobs": 1}
            for seed, prompt in enumerate(["Hello", "A longer prompt here", "x"])
        ]

        async def run(url: str, bodies=bodies, lm=lm):
            async with httpx.AsyncClient(base_url=url, timeout=300) as client:
                alone = [await send(client, lm.name, "completions", body) for body in bodies]
                together = await asyncio.gather(*(send(client, lm.name, "completions", body) for body in bodies))
                return alone, together

        with live_server(lm) as running:
            alone, together = asyncio.run(run(running.url))
        for mine, reference in zip(together, alone):
            assert_same(mine, reference)
        assert hasattr(lm.backend, "forward_groups") == batches
