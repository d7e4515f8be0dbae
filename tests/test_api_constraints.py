"""Constraints over decodelab's own endpoints: `config.constraint = {"kind", "source"}` on /api/trace, /api/next
and sessions. A constrained trace's output validates and its steps report the constraint stage; a session
under a regex follows undo, and its distribution's removed tokens are the library's mask; bad constraints are
400s naming config.constraint."""

from __future__ import annotations

import json
import re

import httpx
import jsonschema
import pytest
import torch

from decodelab.generation_config import GenerationConfig
from decodelab.server.limits import MAX_CONSTRAINT_CHARS
from decodelab.session import Session

BOOK = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 20},
        "year": {"type": "integer", "minimum": 1500, "maximum": 2030},
        "genre": {"enum": ["novel", "poetry", "history"]},
    },
    "required": ["title", "year", "genre"],
    "additionalProperties": False,
}
DATE = r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]"


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def sse_events(reply: httpx.Response) -> list[tuple[str, dict]]:
    events, name = [], "message"
    for line in reply.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((name, json.loads(line.removeprefix("data: "))))
    return events


def constraint(kind: str, source=None) -> dict:
    return {"kind": kind} if source is None else {"kind": kind, "source": source}


def test_a_constrained_trace_validates_and_its_steps_report_the_constraint_stage(http, bundled):
    config = {"constraint": constraint("json_schema", BOOK), "temperature": 1.0, "seed": 5, "max_new_tokens": 60}
    body = {"prompt": "A book as JSON:", "config": config, "n": 2}
    with http.stream("POST", "/api/trace", json=body) as reply:
        assert reply.status_code == 200
        events = sse_events(reply)
    steps = [data for name, data in events if name == "step"]
    results = [data for name, data in events if name == "result"]
    assert len(results) == 2
    for result in results:
        assert result["stop_reason"]["kind"] == "constraint_complete"
        jsonschema.validate(json.loads(result["text"]), BOOK)
    for step in steps:
        first = step["stages"][0]
        assert first["name"] == "constraint" and 1 <= first["kept"] < bundled.decoder.backend.vocab_size
        assert step["overruled_by"] == ("constraint" if first["removed_top"] else None)
    assert any(step["overruled_by"] == "constraint" for step in steps)  # the schema overruled the model somewhere

    # The same tokens as the library's own generation with the same seed.
    expected = bundled.sample("A book as JSON:", 2, json_schema=BOOK, temperature=1.0, seed=5, max_new_tokens=60)
    assert [result["text"] for result in results] == [row.text for row in expected]


def test_next_applies_a_choice_constraint(http):
    options = [" Paris", " Lyon"]
    reply = http.post(
        "/api/next",
        json={"prompt": "The capital of France is", "config": {"constraint": constraint("choice", options)}},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["config"]["constraint"] == {"kind": "choice", "source": json.dumps(options)}
    after = body["next"]["after"]
    assert after and all(any(option.startswith(c["piece"]) for option in options) for c in after)


def start(http, prompt: str, config: dict) -> tuple[dict, dict]:
    reply = http.post("/api/sessions", json={"prompt": prompt, "config": config})
    assert reply.status_code == 200, reply.text
    state = reply.json()
    return state, {"X-Session-Secret": state["secret"]}


def call(http, state, owner, route: str, **body) -> httpx.Response:
    return http.post(f"/api/sessions/{state['id']}/{route}", json=body, headers=owner)


def library_allowed(bundled, config: GenerationConfig, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """(V,) the tokens the library's own session allows after `generated` (forced, as the reference)."""
    session = Session(bundled, prompt_ids, config)
    for token in generated:
        session.append(token)
    return torch.isfinite(session.distribution(after_samplers=True).logits)


def test_a_session_under_a_regex_follows_undo_and_removes_the_librarys_mask(http, bundled):
    config = {"constraint": constraint("regex", DATE), "temperature": 1.0, "seed": 11}
    state, owner = start(http, "Today's date is", config)
    reference = GenerationConfig.from_dict(state["config"])
    assert reference.constraint is not None and reference.constraint.source == DATE
    for _ in range(5):
        assert call(http, state, owner, "step", config=config).status_code == 200
    undone = call(http, state, owner, "undo", count=2).json()["state"]
    assert len(undone["steps"]) == 3
    state = call(http, state, owner, "step", config=config).json()["state"]
    generated = [step["id"] for step in state["steps"]]

    # The bars' ids: the model's top 50 and some of its least likely tokens.
    ids = [c["id"] for c in state["next"]["top"]] + list(range(0, 49152, 997))
    reply = call(http, state, owner, "distribution", config=config, ids=ids)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    allowed = library_allowed(bundled, reference, state["prompt"]["ids"], generated)
    assert body["allowed"] == [bool(allowed[token]) for token in ids]
    assert [p == 0 for p in body["probs"]] == [not a for a in body["allowed"]]  # removed = forbidden here
    report = body["constraint"]
    assert report["name"] == "constraint" and report["kept"] == int(allowed.sum()) == body["kept"]
    assert 0 < report["removed_mass"] < 1
    assert all(allowed[c["id"]] for c in state["next"]["after"])  # the state's own chain is the same

    # Stepped to the end, the output matches and the session says why it stopped.
    done = call(http, state, owner, "generate", count=20, config=config).json()["state"]
    assert done["stop_reason"]["kind"] == "constraint_complete" and re.fullmatch(DATE, done["text"])


def test_forcing_a_forbidden_token_is_a_400_with_the_librarys_message(http):
    state, owner = start(http, "Answer:", {"constraint": constraint("regex", "[0-9]+")})
    reply = call(http, state, owner, "append", text=" yes")
    assert reply.status_code == 400
    assert "forbidden here by the regex constraint" in reply.json()["error"]["message"]
    assert call(http, state, owner, "append", text="7").status_code == 200
    # An append may bring the config, as a step does: the token is checked under it.
    free, owner = start(http, "Answer:", {})
    reply = call(http, free, owner, "append", text=" yes", config={"constraint": constraint("choice", [" no"])})
    assert reply.status_code == 400 and "forbidden here by the choice constraint" in reply.json()["error"]["message"]
    assert call(http, free, owner, "append", text=" no").json()["state"]["config"]["constraint"]["kind"] == "choice"


def test_a_constraint_the_generated_text_breaks_is_refused_until_undone(http):
    state, owner = start(http, "The capital of France is", {"seed": 1})
    call(http, state, owner, "append", text=" Paris")
    digits = {"constraint": constraint("regex", "[0-9]+")}
    for route in ("step", "distribution"):
        reply = call(http, state, owner, route, config=digits)
        assert reply.status_code == 400
        assert "does not match the regex constraint: undo it" in reply.json()["error"]["message"]
    assert call(http, state, owner, "undo").status_code == 200
    stepped = call(http, state, owner, "step", config=digits, greedy=True).json()
    assert stepped["step"]["piece"].isdigit() and stepped["state"]["config"]["constraint"]["kind"] == "regex"


def test_a_choice_session_stops_complete(http):
    options = [" Paris", " the city of Lyon"]
    config = {"constraint": constraint("choice", options)}
    state, owner = start(http, "The best French city is", config)
    done = call(http, state, owner, "generate", count=12, config=config, greedy=True).json()["state"]
    assert done["text"] in options and done["stop_reason"]["kind"] == "constraint_complete"


DEEP = {"type": "string"}
for _ in range(300):
    DEEP = {"type": "object", "properties": {"a": DEEP}, "required": ["a"]}


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (
            constraint("regex", "(unclosed"),
            'regex constraint does not compile: invalid regex "(unclosed"',
        ),
        (constraint("json_schema", "{not json"), "the JSON schema is not JSON"),
        (constraint("json_schema", {"type": "nonsense"}), "json schema constraint does not compile: Invalid type"),
        (constraint("json_schema", DEEP), "json schema constraint does not compile: recursion limit"),
        (constraint("choice", []), "needs a list of non-empty strings"),
        (constraint("choice", "yes"), "a choice constraint's source is a list of strings"),
        (constraint("grammar", "start: undefined_rule"), "grammar constraint does not compile: at 1(8): unknown name"),
        (constraint("regex", 5), "a regex constraint's source is text"),
        (constraint("regex"), "a regex constraint needs its source"),
        (constraint("yaml", "a: 1"), "kind must be one of json_schema, json_object, regex, choice, grammar"),
        (constraint("json_object", "x"), "a json_object constraint takes no source"),
        ("[0-9]+", "must be {'kind', 'source'}"),
        (constraint("regex", "a" * (MAX_CONSTRAINT_CHARS + 1)), f"at most {MAX_CONSTRAINT_CHARS:,} per constraint"),
    ],
    ids=lambda value: str(value)[:30],
)
def test_bad_constraints_are_400s_naming_the_field(http, value, says):
    for path, body in [
        ("/api/trace", {"prompt": "Hi", "config": {"constraint": value}}),
        ("/api/sessions", {"prompt": "Hi", "config": {"constraint": value}}),
    ]:
        reply = http.post(path, json=body)
        assert reply.status_code == 400, (path, reply.text)
        error = reply.json()["error"]
        assert error["param"] == "config.constraint" and error["code"] == "invalid_constraint"
        assert error["message"].startswith("config.constraint: ") and "\n" not in error["message"]
        assert says in error["message"], error["message"]


def test_session_routes_refuse_a_bad_constraint_and_the_keyword_form(http):
    state, owner = start(http, "Hi", {})
    for route in ("step", "generate", "distribution"):
        reply = call(http, state, owner, route, config={"constraint": constraint("regex", "(")})
        assert reply.status_code == 400 and reply.json()["error"]["param"] == "config.constraint"
    reply = http.post("/api/next", json={"prompt": "Hi", "config": {"regex": "[0-9]+"}})
    assert reply.status_code == 400
    assert reply.json()["error"]["message"] == (
        'config.regex: send a constraint as config.constraint = {"kind": "regex", "source": ...}'
    )
    assert len(http.get(f"/api/sessions/{state['id']}", headers=owner).json()["steps"]) == 0


def test_info_states_the_kinds_and_the_limit(http):
    info = http.get("/api/info").json()
    assert info["constraint_kinds"] == ["json_schema", "json_object", "regex", "choice", "grammar"]
    assert info["limits"]["max_constraint_chars"] == MAX_CONSTRAINT_CHARS


def test_a_pathological_regex_ends_in_an_answer_not_a_hang(http):
    """llguidance bounds the work of each mask (its lexer gives up past a limit), so a regex whose automaton
    explodes costs the model thread a bounded time: each step is a 200 or one clear 400."""
    state, owner = start(http, "Hi:", {"constraint": constraint("regex", "((a{100}){100}){100}")})
    for _ in range(4):
        reply = call(http, state, owner, "step", greedy=True)
        assert reply.status_code in (200, 400), reply.text
        if reply.status_code == 400:
            assert "regex constraint" in reply.json()["error"]["message"]
            break
    assert http.get("/api/info").status_code == 200
