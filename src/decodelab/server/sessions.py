"""Live explorer sessions: each belongs to the client that started it and holds a KV cache, so they are bounded.

A session is driven by its id *and* the secret returned when it was created (header `X-Session-Secret`):
knowing an id is not enough. Idle sessions expire after `ttl` seconds. When `limit` sessions are live, or
their KV caches together would pass `max_tokens`, a new session (or a step that grows one) gets 429:
nobody's live session is evicted to make room.

A session takes one action at a time (its `lock`). A generate holds it for long: while one runs, any other
action on the session is a 409 at once (stop it first with POST .../cancel), never queued behind it.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from decodelab.server.errors import APIError
from decodelab.server.runner import busy
from decodelab.session import Session

SECRET_HEADER = "X-Session-Secret"


class SessionLock:
    """The lock of one session's routes (`async with live.lock`), and the long run that holds it: from the moment a
    generate asks for the lock until it lets go, `running` is that run and every other route gets 409."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self._lock = asyncio.Lock()
        self.running: Any = None  # the generate holding (or about to hold) the lock

    async def __aenter__(self) -> None:
        self.check_idle()
        await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._lock.release()

    def check_idle(self) -> None:
        if self.running is not None:
            raise APIError(
                409,
                f"the session is generating: stop it first (POST /api/sessions/{self.session_id}/cancel), or wait "
                "for its end",
                code="session_generating",
            )

    async def acquire_for(self, running: Any) -> None:
        """Take the lock for `running` (409 while another run has it); waits only for a step in flight."""
        self.check_idle()
        self.running = running
        try:
            await self._lock.acquire()
        except BaseException:
            self.running = None
            raise

    def release_for(self, running: Any) -> None:
        """`running` is over: the session takes other actions again (once; later calls do nothing)."""
        if self.running is running:
            self.running = None
            self._lock.release()


@dataclass
class LiveSession:
    id: str
    secret: str
    session: Session
    prompt_tokens: list[dict]  # the prompt's token view, as Token.to_dict() rows
    last_used: float = field(default=0.0)
    # Held by every route that reads or changes the session: a step's forward waits for the batched step, and
    # nothing else may see the session between its token and its new logits.
    lock: SessionLock = field(init=False)

    def __post_init__(self) -> None:
        self.lock = SessionLock(self.id)

    @property
    def kv_tokens(self) -> int:
        return len(self.session.prompt_ids) + len(self.session.steps)


class SessionStore:
    def __init__(
        self,
        limit: int = 32,
        max_tokens: int = 65_536,
        ttl: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.limit, self.max_tokens, self.ttl, self._clock = limit, max_tokens, ttl, clock
        self._sessions: dict[str, LiveSession] = {}

    def check_room(self, tokens: int) -> None:
        """Before a session of `tokens` is built: 400 if it could never fit, 429 if the store is full now."""
        self.expire()
        if tokens > self.max_tokens:
            raise APIError(
                400,
                f"this session needs {tokens} KV-cache tokens and this server allows {self.max_tokens} "
                "for all sessions (decodelab serve --max-session-tokens): shorten the prompt",
                code="request_too_large",
            )
        self._check_fits(tokens)

    def _check_fits(self, tokens: int) -> None:
        if len(self._sessions) >= self.limit:
            raise self._full(
                f"the server holds {len(self._sessions)} live sessions (its limit, decodelab serve --max-sessions)"
            )
        if self.kv_tokens() + tokens > self.max_tokens:
            raise self._full(
                f"live sessions hold {self.kv_tokens()} of the {self.max_tokens} KV-cache tokens the "
                f"server allows them and this one needs {tokens}"
            )

    def check_growth(self, live: LiveSession, tokens: int) -> None:
        """Before `live` grows by `tokens` positions: 429 when that would pass the sessions' budget."""
        self.expire()
        if self.kv_tokens() + tokens > self.max_tokens:
            raise self._full(
                f"live sessions hold {self.kv_tokens()} of the {self.max_tokens} KV-cache tokens the "
                f"server allows them; {tokens} more do not fit (undo some tokens)"
            )

    def _full(self, what: str) -> APIError:
        wait = self.seconds_until_one_expires()
        return busy(
            f"{what}: end a session with DELETE /api/sessions/ID, or retry in {wait} s when an idle one expires",
            "sessions_full",
            retry_after=wait,
        )

    def add(self, session: Session, prompt_tokens: list[dict]) -> LiveSession:
        """Keep `session` (checked again: others may have been added while it was built)."""
        live = LiveSession(secrets.token_urlsafe(9), secrets.token_urlsafe(24), session, prompt_tokens, self._clock())
        self.expire()
        self._check_fits(live.kv_tokens)
        self._sessions[live.id] = live
        return live

    def get(self, session_id: str, secret: str | None) -> LiveSession:
        """The session, if `secret` is the one it was created with; marks it used."""
        self.expire()
        live = self._sessions.get(session_id)
        if live is None:
            raise APIError(
                404,
                f"no session {session_id[:40]!r}: it ended, or expired after {self.ttl:g} s idle; start a new one",
                code="session_not_found",
            )
        if secret is None or not secrets.compare_digest(secret.encode(), live.secret.encode()):
            raise APIError(
                403,
                f"session {session_id!r} belongs to the client that started it: send the secret "
                f"returned when it was created in the {SECRET_HEADER} header",
                type="permission_error",
                code="session_secret_mismatch",
            )
        live.last_used = self._clock()
        return live

    def remove(self, session_id: str, secret: str | None) -> LiveSession:
        """Forget the session (its run, if one is going, is the caller's to stop); returns it."""
        live = self.get(session_id, secret)
        del self._sessions[session_id]
        return live

    def expire(self) -> None:
        """Drop sessions idle for longer than `ttl` (their KV caches go with them); a generating one is not idle."""
        now = self._clock()
        idle = [
            i for i, live in self._sessions.items() if now - live.last_used > self.ttl and live.lock.running is None
        ]
        for session_id in idle:
            del self._sessions[session_id]

    def seconds_until_one_expires(self) -> int:
        if not self._sessions:
            return 1
        oldest = min(live.last_used for live in self._sessions.values())
        return max(1, math.ceil(oldest + self.ttl - self._clock()))

    def kv_tokens(self) -> int:
        return sum(live.kv_tokens for live in self._sessions.values())

    def __len__(self) -> int:
        self.expire()
        return len(self._sessions)
