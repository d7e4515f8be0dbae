"""The server's stated limits, each tried for real on a live server: sessions that belong to their creator and
expire, slow clients cut off, the key checked before the body, internal faults kept generic, and memory
that stays bounded however large a request asks to be."""

from __future__ import annotations

import logging
import os
import socket
import time

import httpx
import pytest

from live_server import live_server

M = "SmolLM2-135M-Instruct"


def start_session(client: httpx.Client, prompt: str = "Hello") -> tuple[str, dict]:
    reply = client.post("/api/sessions", json={"prompt": prompt})
    assert reply.status_code == 200, reply.text
    state = reply.json()
    return state["id"], {"X-Session-Secret": state["secret"]}


def test_sessions_belong_to_their_creator_and_a_full_store_evicts_nobody(bundled):
    with live_server(bundled, max_sessions=2) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        first, first_owner = start_session(client)
        second, second_owner = start_session(client)
        # Another client knows the id but not the secret: it cannot read, drive or end the session.
        assert client.get(f"/api/sessions/{first}", headers=second_owner).status_code == 403
        assert client.post(f"/api/sessions/{first}/step", json={}, headers=second_owner).status_code == 403
        assert client.delete(f"/api/sessions/{first}").status_code == 403
        # The store is full: a third session is refused, and both live ones keep working.
        refused = client.post("/api/sessions", json={"prompt": "Hi"})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "--max-sessions" in refused.json()["error"]["message"]
        for sid, owner in ((first, first_owner), (second, second_owner)):
            assert client.post(f"/api/sessions/{sid}/step", json={"greedy": True}, headers=owner).status_code == 200
        # Ending one makes room.
        assert client.delete(f"/api/sessions/{first}", headers=first_owner).status_code == 200
        start_session(client)


def test_idle_sessions_expire(bundled):
    with live_server(bundled, session_ttl=0.5) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        sid, owner = start_session(client)
        time.sleep(1.0)  # longer than the TTL: expiry is "at least ttl idle", never sooner
        gone = client.get(f"/api/sessions/{sid}", headers=owner)
        assert gone.status_code == 404 and "expired" in gone.json()["error"]["message"]
        assert running.state.sessions.kv_tokens() == 0


def test_sessions_share_a_kv_budget(bundled):
    with (
        live_server(bundled, max_session_tokens=40) as running,
        httpx.Client(base_url=running.url, timeout=60) as client,
    ):
        too_long = client.post("/api/sessions", json={"prompt": "word " * 60})
        assert too_long.status_code == 400 and "--max-session-tokens" in too_long.json()["error"]["message"]
        sid, owner = start_session(client, "word " * 30)
        assert client.post("/api/sessions", json={"prompt": "word " * 20}).status_code == 429
        grow = client.post(f"/api/sessions/{sid}/generate", json={"count": 40}, headers=owner)
        assert grow.status_code == 429 and "undo some tokens" in grow.json()["error"]["message"]


def read_reply(connection: socket.socket, deadline: float) -> bytes:
    """What the server sends before it closes the connection (it must close it by itself)."""
    connection.settimeout(max(0.1, deadline - time.monotonic()))
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


def test_slow_clients_are_cut_off(bundled):
    with live_server(bundled, header_timeout=0.5, body_timeout=0.5) as running:
        # Half a request line, then nothing: the headers never finish.
        with socket.create_connection(("127.0.0.1", running.port)) as slow:
            slow.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            reply = read_reply(slow, time.monotonic() + 60)
        assert reply.startswith(b"HTTP/1.1 408") and b"headers did not arrive" in reply
        # Whole headers, a tenth of the body, then nothing.
        with socket.create_connection(("127.0.0.1", running.port)) as slow:
            slow.sendall(
                b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"model": '
            )
            reply = read_reply(slow, time.monotonic() + 60)
        assert b" 408 " in reply.split(b"\r\n")[0] and b"body did not arrive" in reply
        assert httpx.get(running.url + "/v1/models").status_code == 200


def test_the_key_is_checked_before_the_body_and_may_be_any_text(bundled):
    key = "비밀-열쇠"
    with live_server(bundled, api_key=key) as running:
        anonymous = httpx.post(
            running.url + "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert anonymous.status_code == 401  # not a 400 about the body: nobody parses it for a stranger
        oversized = httpx.post(running.url + "/v1/completions", content=b"x" * (5 * 2**20))
        assert oversized.status_code == 401
        utf8 = {"authorization": b"Bearer " + key.encode()}
        assert httpx.get(running.url + "/v1/models", headers=utf8).status_code == 200


def test_allowed_hosts_widen_the_host_check(bundled):
    with live_server(bundled, extra_hosts=["classroom.local"]) as running:
        assert httpx.get(running.url + "/v1/models", headers={"host": "classroom.local:80"}).status_code == 200
        assert httpx.get(running.url + "/v1/models", headers={"host": "localhost"}).status_code == 200
        assert httpx.get(running.url + "/v1/models", headers={"host": "other.local"}).status_code == 400


def test_an_internal_fault_is_a_generic_500_with_the_details_in_the_log(bundled, caplog):
    from decodelab.errors import DecodelabError

    with live_server(bundled) as running:

        def fails() -> None:  # a route with a bug in it: not the user's doing
            raise DecodelabError("the cache at /secret/path is corrupt")

        running.app.add_api_route("/api/broken", fails)
        with caplog.at_level(logging.ERROR, logger="decodelab.server"):
            reply = httpx.get(running.url + "/api/broken")
        assert reply.status_code == 500
        assert reply.json()["error"]["type"] == "server_error"
        assert "/secret/path" not in reply.text and "Traceback" not in reply.text
        assert "/secret/path" in caplog.text


def rss_bytes() -> int:
    """Resident memory of this process (the server runs in it), after handing freed heap back to the OS: what
    earlier tests left free in the allocator would otherwise be counted, or hide growth."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_memory_stays_bounded_under_requests_that_ask_for_too_much(bundled):
    from decodelab.server.limits import kv_bytes_per_token

    per_token = kv_bytes_per_token(bundled.backend)
    assert per_token == 2 * 30 * 3 * 64 * 4  # SmolLM2-135M: 30 layers of 3 KV heads of 64, float32
    prompt = "The sea is " * 2100
    with live_server(bundled) as running, httpx.Client(base_url=running.url, timeout=300) as client:
        start_session(client)  # warm-up: allocator pools and caches reach their working size
        baseline = rss_bytes()
        sid, owner = start_session(client, prompt)
        tokens = running.state.sessions.get(sid, owner["X-Session-Secret"]).kv_tokens
        assert 6000 <= tokens <= 7000
        grown = rss_bytes() - baseline
        # The KV cache is what a session must hold; the old prefill also kept tokens x 49,152 float32 logits
        # (~1.2 GB here) until the first step.
        print(f"{tokens}-token session: +{grown / 2**20:.0f} MiB RSS, KV cache {tokens * per_token / 2**20:.0f} MiB")
        assert grown < tokens * per_token + 150 * 2**20
        started = time.monotonic()
        refused = client.post(
            "/api/compare", json={"prompt": "The capital of France is", "strategies": "beam:2000", "max_new_tokens": 3}
        )
        elapsed = time.monotonic() - started
        print(f"beam:2000 compare refused in {elapsed * 1000:.0f} ms")
        assert refused.status_code == 400 and elapsed < 5  # a bound a loaded machine keeps; it takes ~10 ms
        state = client.get(f"/api/sessions/{sid}", headers={**owner}).json()
        assert len(state["prompt"]["ids"]) == tokens
        assert rss_bytes() - baseline < tokens * per_token + 200 * 2**20
