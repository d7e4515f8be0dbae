"""Live explorer sessions, by id, with a bound: each holds a KV cache, so the least recently used go first."""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass

from decodelab.server.errors import APIError
from decodelab.session import Session


@dataclass
class LiveSession:
    id: str
    session: Session
    prompt_tokens: list[dict]  # the prompt's token view, as Token.to_dict() rows


class SessionStore:
    def __init__(self, limit: int = 32):
        self.limit = limit
        self._sessions: OrderedDict[str, LiveSession] = OrderedDict()

    def add(self, session: Session, prompt_tokens: list[dict]) -> LiveSession:
        live = LiveSession(secrets.token_urlsafe(9), session, prompt_tokens)
        self._sessions[live.id] = live
        while len(self._sessions) > self.limit:
            self._sessions.popitem(last=False)
        return live

    def get(self, session_id: str) -> LiveSession:
        live = self._sessions.get(session_id)
        if live is None:
            raise APIError(404, f"no session {session_id!r}: it ended, or was dropped because the server keeps only "
                                f"the {self.limit} most recent sessions; start a new one", code="session_not_found")
        self._sessions.move_to_end(session_id)
        return live

    def remove(self, session_id: str) -> None:
        self.get(session_id)
        del self._sessions[session_id]

    def __len__(self) -> int:
        return len(self._sessions)
