"""What the web page reads from the server about the sampler stages: /api/info's stage list (the page builds its
controls from it) and POST /api/sessions/{id}/distribution, the post-chain distribution of a session's state
under a config the session does not take on (the page shows it when a stage it does not run itself is on)."""

from __future__ import annotations

import httpx
import pytest

from decodelab.samplers import DEFAULT_ORDER, describe_stages

PROMPT = "the cat and the dog and the cat and the dog and the"


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture
def session(http):
    state = http.post("/api/sessions", json={"prompt": PROMPT, "config": {"seed": 3, "top_k": 7}}).json()
    owner = {"X-Session-Secret": state["secret"]}
    yield state, owner
    http.delete(f"/api/sessions/{state['id']}", headers=owner)


def test_info_lists_the_registry_stages_in_the_default_order(http):
    info = http.get("/api/info").json()
    assert info["stages"] == describe_stages()
    assert info["default_order"] == list(DEFAULT_ORDER) == [stage["name"] for stage in info["stages"]]
    temperature = next(stage for stage in info["stages"] if stage["name"] == "temperature")
    setting = temperature["settings"][0]
    assert temperature["warper"] is True and setting["name"] == "temperature" and setting["kind"] == "float"
    assert setting["default"] == 1.0 and setting["off"] == [1.0, 0.0] and setting["slider"] == [0.0, 2.0, 0.05]
    assert setting["help"] and setting["allowed"]


def distribution(http, session, **body) -> httpx.Response:
    state, owner = session
    return http.post(f"/api/sessions/{state['id']}/distribution", json=body, headers=owner)


def test_the_distribution_under_another_config_leaves_the_session_as_it_was(http, session):
    state, owner = session
    config = {"temperature": 0.8, "repetition_penalty": 1.5}
    ids = [candidate["id"] for candidate in state["next"]["top"][:20]]
    reply = distribution(http, session, config=config, ids=ids, top=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()

    # The same as /api/next's chain on the same text (here: the prompt alone) ...
    expected = http.post("/api/next", json={"prompt": PROMPT, "config": config, "top": 1000}).json()["next"]
    after = {candidate["id"]: candidate["prob"] for candidate in expected["after"]}
    assert body["probs"] == pytest.approx([after.get(token, 0.0) for token in ids], abs=1e-6)
    assert [c["id"] for c in body["after"]] == [c["id"] for c in expected["after"][:30]]
    assert body["kept"] == expected["vocab_size"] and body["greedy"] is False
    assert body["config"]["repetition_penalty"] == 1.5 and body["config"]["top_k"] is None
    # ... and the penalty changed it: "the", "cat", "and", "dog" are all in the prompt.
    temperature_only = http.post("/api/next", json={"prompt": PROMPT, "config": {"temperature": 0.8}}).json()
    plain = {c["id"]: c["prob"] for c in temperature_only["next"]["after"]}
    assert max(abs(body["probs"][i] - plain.get(token, 0.0)) for i, token in enumerate(ids)) > 0.01

    # The session still has its own config, and a step draws under it.
    again = http.get(f"/api/sessions/{state['id']}", headers=owner).json()
    assert again["config"] == state["config"] and again["config"]["top_k"] == 7
    assert again["next"] == state["next"]


def test_greedy_is_the_argmax_after_the_stages_that_are_not_warpers(http, session):
    state, _ = session
    ids = [candidate["id"] for candidate in state["next"]["top"][:20]]
    body = distribution(http, session, config={"repetition_penalty": 1.5, "top_k": 3}, greedy=True, ids=ids).json()
    penalized = http.post("/api/next", json={"prompt": PROMPT, "config": {"repetition_penalty": 1.5}}).json()
    argmax = penalized["next"]["after"][0]["id"]
    assert body["greedy"] is True and body["argmax"] == argmax and body["kept"] == 1
    assert body["probs"] == [1.0 if token == argmax else 0.0 for token in ids]
    assert [c["id"] for c in body["after"]] == [argmax]
    temperature_zero = distribution(http, session, config={"temperature": 0}, ids=ids[:1]).json()
    assert temperature_zero["greedy"] is True and temperature_zero["probs"] == [1.0]  # the raw argmax


def test_bad_requests_are_one_clear_refusal(http, session):
    state, _ = session
    bad = distribution(http, session, config={"top_p": 1.5})
    assert bad.status_code == 400 and bad.json()["error"]["message"] == "top_p must be in (0, 1], got 1.5"
    outside = distribution(http, session, ids=[10**7])
    assert outside.status_code == 400 and "ids must be token ids in [0, 49152)" in outside.json()["error"]["message"]
    unknown = distribution(http, session, config={"top_q": 1})
    assert unknown.status_code == 400 and "top_q" in unknown.json()["error"]["message"]
    assert http.post(f"/api/sessions/{state['id']}/distribution", json={}).status_code == 403  # no secret
    assert http.post("/api/sessions/nope/distribution", json={}).status_code == 404
    own = distribution(http, session)
    assert own.status_code == 200 and own.json()["config"]["top_k"] == 7  # no config: the session's own
