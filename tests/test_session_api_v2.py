"""The explorer's sessions, second edition (#18), against a live server on the bundled model: generation streamed
step by step and stopped three ways (POST .../cancel, DELETE, the client closing the stream), a 409 for any other
action meanwhile, per-step records (how, draw, seed, settings), the same seed giving the same tokens, a trace
that replays exactly (and a tampered one refused), redo after undo, and /api/info's sampler help.

No test asserts a duration or races one: a generation to stop asks for the most steps a request may (512), and
the model thread pauses after a known step (`LiveServer.paused_when`) until the stop has reached the generation's
task, so the tests know how many steps were made; counters that change after an answer are polled for."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from decodelab.decoding import draw_seed
from decodelab.samplers import STAGES
from decodelab.server.explorer_schemas import MAX_GENERATE_STEPS

PROMPT = "Count: 1, 2, 3,"


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def no_stop(bundled) -> dict:
    """A config under which the generation never ends by itself: the stop tokens banned."""
    return {"logit_bias": {str(i): -100 for i in bundled.stop_ids()}}


def start(http, **body) -> tuple[dict, dict]:
    reply = http.post("/api/sessions", json={"prompt": PROMPT, **body})
    assert reply.status_code == 200, reply.text
    state = reply.json()
    return state, {"X-Session-Secret": state["secret"]}


def data_events(lines: Iterator[str]) -> Iterator[dict | str]:
    for line in lines:
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `condition` (counters that change after an answer); the timeout only guards a hung test."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def assert_whole_steps(server, bundled, sid: str, secret: str) -> None:
    """The session holds whole steps only: a record per token, and next-token logits equal to a fresh forward of
    the prompt and every token (a step cut in half would leave the token without its logits)."""
    session = server.state.sessions.get(sid, secret).session
    assert len(session.steps) == len(session.token_ids) == len(session.save()["tokens"])
    fresh = bundled.next_token_distribution(session.prompt_ids + session.token_ids)
    torch.testing.assert_close(session.distribution().logits, fresh.logits, rtol=1e-4, atol=1e-4)


def stats(http) -> dict:
    return http.get("/api/stats").json()


def test_streamed_steps_arrive_while_it_runs_and_cancel_stops_it_between_steps(http, server, bundled):
    state, owner = start(http, config=no_stop(bundled))
    sid, live = state["id"], server.state.sessions.get(state["id"], state["secret"])
    before = stats(http)["cancelled"]
    body = {"count": MAX_GENERATE_STEPS, "stream": True}
    with (
        server.paused_when(lambda: len(live.session.steps) >= 3) as pause,
        http.stream("POST", f"/api/sessions/{sid}/generate", json=body, headers=owner) as reply,
        ThreadPoolExecutor(2) as pool,
    ):
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        events = data_events(reply.iter_lines())
        first = next(events)
        assert first["index"] == 0 and first["step"]["step"] == 0 and first["step"]["how"] == "sampled"
        pause.wait("the third step")  # made; the second was sent, the third goes at the next tick
        # Still generating: every other action on the session is refused at once, not queued behind it.
        for path, action in [("step", {}), ("undo", {}), ("generate", {"count": 1}), ("distribution", {})]:
            refused = http.post(f"/api/sessions/{sid}/{path}", json=action, headers=owner)
            assert refused.status_code == 409, (path, refused.text)
            assert f"stop it first (POST /api/sessions/{sid}/cancel)" in refused.json()["error"]["message"]
        # A look at the state is no action: admitted now, it answers between two steps.
        admitted = server.state.runner.stats.active
        looking = pool.submit(http.get, f"/api/sessions/{sid}", headers=owner)
        wait_for(lambda: server.state.runner.stats.active == admitted + 1, "the look to be admitted")
        running = live.lock.running
        cancelling = pool.submit(http.post, f"/api/sessions/{sid}/cancel", headers=owner)
        wait_for(lambda: running.stream.finished, "the cancel to reach the generation's task")
        pause.resume()
        seen, cancelled = looking.result(), cancelling.result().json()
        rest = list(events)
    assert seen.status_code == 200 and len(seen.json()["steps"]) == 3
    assert cancelled["cancelled"] is True
    made = cancelled["state"]["steps"]
    assert len(made) == 3  # no step after the cancel reached the task
    assert stats(http)["cancelled"] == before + 1
    steps = [first] + [event for event in rest[:-2]]
    assert [event["index"] for event in steps] == list(range(len(made)))  # every step made was sent, in order
    assert [event["step"] for event in steps] == made
    assert rest[-2] == {"state": cancelled["state"], "stopped": "cancelled"} and rest[-1] == "[DONE]"
    assert_whole_steps(server, bundled, sid, state["secret"])
    again = http.post(f"/api/sessions/{sid}/step", json={}, headers=owner)  # stopped: the session is free
    assert again.status_code == 200 and again.json()["step"]["step"] == len(made)
    assert http.post(f"/api/sessions/{sid}/cancel", headers=owner).json()["cancelled"] is False


def test_deleting_a_generating_session_stops_its_generation(http, server, bundled):
    state, owner = start(http, config=no_stop(bundled))
    sid, live = state["id"], server.state.sessions.get(state["id"], state["secret"])
    before = stats(http)["cancelled"]
    body = {"count": MAX_GENERATE_STEPS, "stream": True}
    with (
        server.paused_when(lambda: len(live.session.steps) >= 2) as pause,
        http.stream("POST", f"/api/sessions/{sid}/generate", json=body, headers=owner) as reply,
        ThreadPoolExecutor(1) as pool,
    ):
        events = data_events(reply.iter_lines())
        next(events)
        pause.wait("the second step")
        running = live.lock.running
        deleting = pool.submit(http.delete, f"/api/sessions/{sid}", headers=owner)
        wait_for(lambda: running.stream.finished, "the delete to reach the generation's task")
        pause.resume()
        deleted = deleting.result()
        rest = list(events)
    assert deleted.json() == {"id": sid, "deleted": True, "cancelled": True}
    assert stats(http)["cancelled"] == before + 1
    assert rest[-2]["stopped"] == "cancelled" and len(rest[-2]["state"]["steps"]) == 2
    assert http.get(f"/api/sessions/{sid}", headers=owner).status_code == 404
    runner = server.state.runner.stats
    wait_for(lambda: runner.running_rows == 0, "the deleted session's task to leave the batch")
    tokens = runner.tokens
    time.sleep(0.3)
    assert runner.tokens == tokens  # no task goes on stepping the deleted session


def test_a_client_closing_the_stream_cancels_the_generation(http, server, bundled):
    state, owner = start(http, config=no_stop(bundled))
    sid, live = state["id"], server.state.sessions.get(state["id"], state["secret"])
    before = stats(http)["cancelled"]
    with (
        server.paused_when(lambda: len(live.session.steps) >= 4) as pause,
        httpx.Client(base_url=server.url, timeout=120) as leaving,
    ):
        body = {"count": MAX_GENERATE_STEPS, "stream": True}
        with leaving.stream("POST", f"/api/sessions/{sid}/generate", json=body, headers=owner) as reply:
            events = data_events(reply.iter_lines())
            received = [next(events) for _ in range(3)]
            pause.wait("the fourth step")
            running = live.lock.running
        leaving.close()  # the client goes away
        wait_for(lambda: running.stream.finished, "the server to see the stream closed")
    assert [event["index"] for event in received] == [0, 1, 2]
    wait_for(lambda: stats(http)["cancelled"] == before + 1, "the closed stream to count as cancelled")
    after = http.get(f"/api/sessions/{sid}", headers=owner).json()
    assert len(after["steps"]) == 4  # the fourth was made, not yet sent, when the client left
    assert_whole_steps(server, bundled, sid, state["secret"])
    assert http.post(f"/api/sessions/{sid}/step", json={}, headers=owner).status_code == 200


def test_a_json_generate_is_cancelled_too_and_answers_with_the_steps_made(http, server, bundled):
    state, owner = start(http, config=no_stop(bundled))
    sid, live = state["id"], server.state.sessions.get(state["id"], state["secret"])
    before = stats(http)["cancelled"]
    with server.paused_when(lambda: len(live.session.steps) >= 2) as pause, ThreadPoolExecutor(2) as pool:
        body = {"count": MAX_GENERATE_STEPS}
        generating = pool.submit(http.post, f"/api/sessions/{sid}/generate", json=body, headers=owner)
        pause.wait("the second step")
        running = live.lock.running
        cancelling = pool.submit(http.post, f"/api/sessions/{sid}/cancel", headers=owner)
        wait_for(lambda: running.stream.finished, "the cancel to reach the generation's task")
        pause.resume()
        answer, cancelled = generating.result().json(), cancelling.result().json()
    assert cancelled["cancelled"] and answer["stopped"] == "cancelled"
    assert len(answer["steps"]) == 2
    assert answer["steps"] == answer["state"]["steps"] == cancelled["state"]["steps"]
    assert stats(http)["cancelled"] == before + 1
    assert_whole_steps(server, bundled, sid, state["secret"])


def test_a_generate_that_runs_its_count_says_so_and_old_answers_keep_their_shape(http, bundled):
    state, owner = start(http, config={"seed": 4, **no_stop(bundled)})
    sid = state["id"]
    with http.stream("POST", f"/api/sessions/{sid}/generate", json={"count": 5, "stream": True}, headers=owner) as r:
        events = list(data_events(r.iter_lines()))
    assert [event["index"] for event in events[:5]] == [0, 1, 2, 3, 4] and events[6] == "[DONE]"
    assert events[5]["stopped"] == "count" and len(events[5]["state"]["steps"]) == 5
    plain = http.post(f"/api/sessions/{sid}/generate", json={"count": 3}, headers=owner).json()
    assert len(plain["steps"]) == 3 and len(plain["state"]["steps"]) == 8 and plain["stopped"] == "count"


def test_errors_before_the_first_step_are_json_even_when_streaming(http, bundled):
    state, owner = start(http)
    sid = state["id"]
    body = {"count": 4, "stream": True, "config": {"top_p": 1.5}}
    reply = http.post(f"/api/sessions/{sid}/generate", json=body, headers=owner)
    assert reply.status_code == 400 and reply.headers["content-type"].startswith("application/json")
    assert "top_p" in reply.json()["error"]["message"]
    assert http.post(f"/api/sessions/{sid}/step", json={}, headers=owner).status_code == 200  # the lock came back


def test_step_records_say_how_each_token_was_chosen(http, bundled):
    state, owner = start(http, config={"seed": 11})
    sid = state["id"]
    assert state["seed"] == 11
    url = f"/api/sessions/{sid}"
    sampled = http.post(f"{url}/step", json={"config": {"temperature": 0.7, "top_k": 20}}, headers=owner).json()
    greedy = http.post(f"{url}/step", json={"greedy": True}, headers=owner).json()
    forced = http.post(f"{url}/append", json={"token_id": 42}, headers=owner).json()
    assert {key: sampled["step"][key] for key in ("how", "draw", "seed", "settings")} == {
        "how": "sampled",
        "draw": 0,
        "seed": draw_seed(11, 0),
        "settings": {"temperature": 0.7, "top_k": 20},
    }
    assert greedy["step"]["how"] == "greedy" and greedy["step"]["seed"] is None and greedy["step"]["draw"] == 1
    assert greedy["step"]["settings"] == {"temperature": 0.7, "top_k": 20, "greedy": True}
    assert forced["step"]["how"] == "forced" and forced["step"]["draw"] is None and forced["step"]["seed"] is None
    assert [step["how"] for step in forced["state"]["steps"]] == ["sampled", "greedy", "forced"]


def test_the_same_seed_and_settings_give_the_same_sampled_tokens(http, bundled):
    settings, prompt = {"temperature": 1.2, "top_p": 0.95}, "Write a story about a dragon."

    def sampled(seed: int) -> list[int]:
        state, owner = start(http, prompt=prompt, config={"seed": seed, **settings})
        reply = http.post(f"/api/sessions/{state['id']}/generate", json={"count": 12}, headers=owner).json()
        assert {step["how"] for step in reply["steps"]} == {"sampled"}
        assert [step["seed"] for step in reply["steps"]] == [draw_seed(seed, i) for i in range(len(reply["steps"]))]
        return [step["id"] for step in reply["steps"]]

    first = sampled(7)
    assert sampled(7) == first
    assert first == bundled.generate(prompt, seed=7, max_new_tokens=12, **settings).token_ids  # the library's draws
    assert sampled(8) != first


def test_a_downloaded_trace_replays_exactly_and_a_tampered_one_is_refused(http, bundled):
    state, owner = start(http, config={"seed": 3, "temperature": 0.8})
    url = f"/api/sessions/{state['id']}"
    http.post(f"{url}/generate", json={"count": 4}, headers=owner)
    http.post(f"{url}/append", json={"text": " five"}, headers=owner)
    http.post(f"{url}/step", json={"config": {"top_k": 5, "temperature": 1.3}}, headers=owner)
    http.post(f"{url}/undo", json={"count": 1}, headers=owner)  # the draw numbers now skip one
    http.post(f"{url}/generate", json={"count": 3, "greedy": True}, headers=owner)
    saved = http.get(f"{url}/trace", headers=owner).json()
    original = http.get(url, headers=owner).json()
    assert saved["model"] == bundled.name and saved["prompt_text"] == bundled.tokenizer.decode(state["prompt"]["ids"])
    assert saved["steps"] == original["steps"] and saved["trace"]["seed"] == 3

    file = json.loads(json.dumps(saved))  # as the page downloads it and loads it back
    replayed = http.post("/api/sessions", json={"trace": file["trace"], "model": file["model"]})
    assert replayed.status_code == 200, replayed.text
    copy = replayed.json()
    assert copy["prompt"]["ids"] == original["prompt"]["ids"] and copy["seed"] == 3
    assert [s["id"] for s in copy["steps"]] == [s["id"] for s in original["steps"]]
    assert [(s["how"], s["draw"], s["settings"]) for s in copy["steps"]] == [
        (s["how"], s["draw"], s["settings"]) for s in original["steps"]
    ]

    tampered = json.loads(json.dumps(file["trace"]))
    k = next(i for i, token in enumerate(tampered["tokens"]) if token["draw"] is not None and i > 0)
    tampered["tokens"][k]["id"] = (tampered["tokens"][k]["id"] + 1) % 1000
    refused = http.post("/api/sessions", json={"trace": tampered})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "trace" and f"trace: replay diverged at token {k}" in error["message"]

    for bad, param, says in [
        ({"trace": file["trace"], "model": "gpt2"}, "trace", "this server runs"),
        ({"trace": {**file["trace"], "prompt_ids": [10**8]}}, "trace.prompt_ids", "outside this model's vocabulary"),
        ({"trace": file["trace"], "prompt": "Hi"}, "trace", "send the trace alone"),
        ({"trace": {**file["trace"], "config": {"top_p": 7}}}, "trace.config", "top_p"),
        ({"trace": {**file["trace"], "tokens": [{"id": 5}]}}, "trace.tokens.0.draw", "is required"),
        ({"trace": {**file["trace"], "tokens": [{"id": 5, "draw": None}] * 9000}}, "trace", "reads at most"),
    ]:
        reply = http.post("/api/sessions", json=bad)
        assert reply.status_code == 400, (param, reply.text)
        assert reply.json()["error"]["param"] == param and says in reply.json()["error"]["message"], reply.text


def test_a_trace_with_a_banned_token_replays(http, bundled):
    """JSON has no -inf: a ban by bias is written as null in states and traces, and null reads back as -inf."""
    likely = bundled.generate(PROMPT, greedy=True, max_new_tokens=1).token_ids[0]
    state, owner = start(http, config={"seed": 5, "temperature": 0.9, "logit_bias": {str(likely): None}})
    url = f"/api/sessions/{state['id']}"
    made = http.post(f"{url}/generate", json={"count": 3}, headers=owner).json()["steps"]
    assert made[0]["id"] != likely
    saved = json.loads(json.dumps(http.get(f"{url}/trace", headers=owner).json()))
    assert saved["trace"]["config"]["logit_bias"] == {str(likely): None}
    replayed = http.post("/api/sessions", json={"trace": saved["trace"], "model": saved["model"]})
    assert replayed.status_code == 200, replayed.text
    assert [s["id"] for s in replayed.json()["steps"]] == [s["id"] for s in made]


def test_undo_to_a_step_then_redo_brings_back_the_same_tokens(http, bundled):
    state, owner = start(http, config={"seed": 21, "temperature": 1.0, "min_p": 0.05})
    url = f"/api/sessions/{state['id']}"
    made = http.post(f"{url}/generate", json={"count": 10}, headers=owner).json()["state"]["steps"]
    assert len(made) == 10
    undone = http.post(f"{url}/undo", json={"count": 10 - 3}, headers=owner).json()  # undo to step 3
    assert undone["removed"] == made[3:] and len(undone["state"]["steps"]) == 3
    redo = [{"id": s["id"], "draw": s["draw"], "config": s["settings"]} for s in undone["removed"]]
    redone = http.post(f"{url}/redo", json={"tokens": redo}, headers=owner).json()
    assert redone["state"]["steps"] == made and redone["steps"] == made[3:]

    # A redo that does not come back is refused whole, the session left as it was.
    http.post(f"{url}/undo", json={"count": 2}, headers=owner)
    wrong = [redo[-2], {**redo[-1], "id": (redo[-1]["id"] + 1) % 1000}]
    refused = http.post(f"{url}/redo", json={"tokens": wrong}, headers=owner)
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "tokens[1]"
    assert "nothing was redone" in refused.json()["error"]["message"]
    assert http.get(url, headers=owner).json()["steps"] == made[:8]

    # Branching at step 3: a new step 4 is a fresh draw (draw numbers never come back but by redo).
    http.post(f"{url}/undo", json={"count": 5}, headers=owner)
    branched = http.post(f"{url}/step", json={}, headers=owner).json()["state"]["steps"]
    assert branched[:3] == made[:3] and len(branched) == 4 and branched[3]["draw"] == 10
    too_many = http.post(f"{url}/undo", json={"count": 5}, headers=owner)
    assert too_many.status_code == 400 and "can undo 1..4 tokens, got 5" in too_many.json()["error"]["message"]


def test_info_lists_every_sampler_stage_with_a_one_line_help_per_setting(http):
    stages = http.get("/api/info").json()["stages"]
    assert [stage["name"] for stage in stages] == list(STAGES)
    for stage in stages:
        assert stage["doc"] and "\n" not in stage["doc"]
        for setting in stage["settings"]:
            assert setting["help"] and "\n" not in setting["help"], setting["name"]
