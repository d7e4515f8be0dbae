"""Property-based fuzzing of every route of the server, generated from the app's own OpenAPI schema.

schemathesis reads /openapi.json and, for each operation, sends a real uvicorn server on the bundled model
requests that fit the schema and requests that deliberately do not (wrong types, missing fields, boundary
numbers, bodies that are not JSON or not UTF-8, odd Content-Types, methods the route does not have). Every
answer must be:

    not a 5xx, and no `server_error` frame inside a 200 stream (a failure the 200 already hid)
    a refusal (4xx) in OpenAI's error shape {"error": {"message", "type", "param", "code"}}, on one line;
    a 429 says when to retry
    on success: JSON without NaN that fits the declared response schema, or an event stream where the route
    streams

The schema states the server's contract (its 4xx/5xx in OpenAI's error shape, streams as text/event-stream,
no FastAPI 422) and the request models are strict (`false` is not the token id 0), so status codes, content
types and the refusal of schema-invalid data are checked too. Not asserted: positive_data_acceptance (a
schema-valid request is still refused for reasons the schema cannot state: an empty prompt, a request over
the KV budget, an unknown `config` key).

The schema cannot know the served model's name nor a live session's secret, so the test supplies them:
`model` is the served name (a wrong one is exercised by GET /v1/models/{model_id}), and most session
cases drive one real session, some without its secret; the rest keep their generated id. The server's
limits are small, so no generated request runs a long generation: one over the KV budget gets a 400.
"""

from __future__ import annotations

import copy
import json
import zlib

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from decodelab.server import create_app
from decodelab.server.sessions import SECRET_HEADER
from live_server import live_server

pytestmark = pytest.mark.slow

LIMITS = dict(
    max_queue=4,
    max_batch_tokens=64,  # a request's rows x (prompt + new tokens): at most ~60 new tokens
    max_session_tokens=32,  # all live sessions together: at most ~28 steps past the session's prompt
    max_sessions=4,
    max_prompt_chars=2000,
    max_beams=4,
    max_strategies=3,
)
EXAMPLES_PER_OPERATION = 20  # of the fuzzing phase; the coverage phase adds its boundary cases on top
STREAMING_ROUTES = {"/api/trace", "/v1/completions", "/v1/chat/completions"}
REFUSALS = {400, 401, 403, 404, 405, 408, 413, 429}  # what the routes answer to a request they will not serve
SESSION_ROUTE = "/api/sessions/{session_id}"
SESSION_PROMPT = {"prompt": "Once upon a time", "config": {"seed": 0}}

# The schema the app generates is the one it serves (test_the_schema_fuzzed_is_the_one_served checks);
# building it needs no model, so the operations are known when pytest collects this module.
OPENAPI = create_app(None).openapi()
schema = schemathesis.openapi.from_dict(
    copy.deepcopy(OPENAPI),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20240601,
            "max-stream-events": 1000,  # read whole streams: the KV budget keeps them short
            "output": {"sanitization": {"enabled": False}},  # `max_tokens` is not a secret
        }
    ),
)


@pytest.fixture(scope="module")
def fuzzed_server(bundled, one_torch_thread):
    with live_server(bundled, **LIMITS) as running:
        yield running


@pytest.fixture(scope="module")
def http(fuzzed_server):
    with httpx.Client(base_url=fuzzed_server.url, timeout=60) as client:
        yield client


def _no_nan(constant: str):
    raise ValueError(f"the response holds {constant}, which is not JSON")


def _json(text: str, what: str):
    try:
        return json.loads(text, parse_constant=_no_nan)
    except ValueError as error:
        raise AssertionError(f"{what} is not JSON: {error}: {text[:200]!r}") from None


def _check_error_shape(document, status: int) -> None:
    assert isinstance(document, dict) and set(document) == {"error"}, f"{status} body is not {{'error': ...}}"
    error = document["error"]
    assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, (
        f"{status} error has fields {sorted(error) if isinstance(error, dict) else error!r}"
    )
    assert isinstance(error["message"], str) and error["message"].strip(), f"{status} error has no message"
    assert "\n" not in error["message"], f"{status} error message is more than one line: {error['message']!r}"
    assert isinstance(error["type"], str) and error["type"], f"{status} error has no type"
    assert error["param"] is None or isinstance(error["param"], str), f"{status} param is {error['param']!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"{status} code is {error['code']!r}"


def _stream_frames(text: str) -> list[dict]:
    """The JSON payloads of a server-sent event stream (the final `[DONE]` left out)."""
    lines = [line.removeprefix("data: ") for line in text.split("\n") if line.startswith("data: ")]
    return [_json(line, "a stream frame") for line in lines if line != "[DONE]"]


@schemathesis.check
def answers_like_decodelab(ctx, response, case) -> None:
    """decodelab's own contract for every answer (schemathesis cannot know it from FastAPI's schema)."""
    status, content_type = response.status_code, response.headers.get("content-type", [""])[0]
    if 200 <= status < 300:
        if content_type.startswith("text/event-stream"):
            assert case.path in STREAMING_ROUTES, f"{case.path} answered an event stream"
            for frame in _stream_frames(response.text):
                error = frame.get("error") if isinstance(frame, dict) else None
                assert not (isinstance(error, dict) and error.get("type") == "server_error"), (
                    f"the 200 stream failed on the server: {frame}"
                )
        else:
            assert content_type.startswith("application/json"), f"{status} with Content-Type {content_type!r}"
            _json(response.text, f"the {status} body")
        return
    assert status in REFUSALS or status >= 500, f"unexpected status {status}"
    _check_error_shape(_json(response.text, f"the {status} body"), status)
    if status == 429:
        assert response.headers.get("retry-after"), "a 429 without Retry-After"


CHECKS = [
    not_a_server_error,
    answers_like_decodelab,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    negative_data_rejection,
]


class OwnedSession:
    """The one real session the session cases drive, put back to its bare prompt after a case changes it
    (so every case starts alike, and earlier cases do not use up the sessions' KV budget)."""

    def __init__(self, http):
        self.http, self.id, self.secret = http, None, None

    def open(self) -> OwnedSession:
        if self.id is None:
            reply = self.http.post("/api/sessions", json=SESSION_PROMPT)
            assert reply.status_code == 200, reply.text
            self.id, self.secret = reply.json()["id"], reply.json()["secret"]
        return self

    def settle(self, method: str, response) -> None:
        """After a case answered on this session: forget it if deleted, else undo the steps it holds."""
        if response.status_code != 200:
            return
        if method == "DELETE":
            self.id = self.secret = None
            return
        state = response.json().get("state", response.json())  # GET answers the state itself
        if state.get("steps"):
            undone = self.http.post(
                f"/api/sessions/{self.id}/undo",
                json={"count": len(state["steps"])},
                headers={SECRET_HEADER: self.secret},
            )
            assert undone.status_code == 200, undone.text


@pytest.fixture(scope="module")
def owned_session(http):
    return OwnedSession(http)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # no shrinking: the failing request is shown
    suppress_health_check=list(HealthCheck),
)
def test_no_request_makes_the_server_fail(case, fuzzed_server, http, owned_session):
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        body["model"] = fuzzed_server.state.lm.name
    headers, session = {}, None
    if case.path.startswith(SESSION_ROUTE):
        # 0: the generated id (404); 1: the real session without its secret (403); 2, 3: its owner.
        kind = zlib.crc32(repr((case.path_parameters, body)).encode()) % 4
        if kind:
            owned = owned_session.open()
            case.path_parameters = {**case.path_parameters, "session_id": owned.id}
            if kind > 1:
                headers[SECRET_HEADER], session = owned.secret, owned
    response = case.call(base_url=fuzzed_server.url, headers=headers, timeout=60)
    try:
        case.validate_response(response, checks=CHECKS)
    finally:
        if session is not None:
            session.settle(case.method.upper(), response)
        elif case.path == "/api/sessions" and response.status_code == 200:  # a generated session: end it
            http.delete(f"/api/sessions/{response.json()['id']}", headers={SECRET_HEADER: response.json()["secret"]})


def test_the_schema_fuzzed_is_the_one_served(http):
    assert http.get("/openapi.json").json() == OPENAPI
