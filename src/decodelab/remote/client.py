"""HTTP to an OpenAI-compatible server: JSON in and out, retries with backoff where they are safe, and errors
that say which server answered what.

Every request the remote backend sends is a read that gives the same answer when repeated (a completion at a
fixed prompt, scored or greedy; a tokenization), so a 429, a 5xx or a dropped connection is retried, after the
server's `Retry-After` when it sends one, else after 0.5, 1, 2, 4 ... seconds. A 4xx other than 429 is the
request's own fault: never retried, raised at once with the server's message.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx

from decodelab.errors import DecodelabError
from decodelab.remote import API_KEY_VARIABLE

RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_WAIT = 30.0  # seconds: a longer Retry-After is waited for this long at most


class RemoteError(DecodelabError):
    """The remote server could not be reached (`status` None), or answered with an error (`status`)."""

    def __init__(self, message: str, status: int | None = None, reachable: bool = True):
        super().__init__(message)
        self.status = status  # the HTTP status it answered, when it answered
        self.reachable = reachable  # False: no connection after every retry


class RemoteClient:
    """One server: `base_url` ends with `/v1` (added when missing); `root` is the server's root, where vLLM's
    /tokenize and decodelab's /api live."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 300.0,
        retries: int = 4,
        backoff: float = 0.5,
    ):
        url = base_url.rstrip("/")
        self.root = url.removesuffix("/v1")
        self.base_url = self.root + "/v1"
        self.retries, self.backoff = retries, backoff
        key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(headers=headers, timeout=timeout)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST `body` to `path`: relative ("completions") under /v1, absolute ("/tokenize") from the root."""
        return self._send("POST", path, body)

    def get(self, path: str) -> Any:
        return self._send("GET", path, None)

    def url(self, path: str) -> str:
        return self.root + path if path.startswith("/") else f"{self.base_url}/{path}"

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = self.url(path)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self._http.request(method, url, json=body)
            except httpx.TransportError as error:  # refused, reset, timed out: the server may come back
                if last:
                    raise RemoteError(
                        f"cannot reach {url} ({type(error).__name__}: {error or 'no answer'}) after "
                        f"{self.retries + 1} tries: is the server running there?",
                        reachable=False,
                    ) from None
                self._wait(attempt, None)
                continue
            if response.status_code in RETRIED_STATUSES and not last:
                self._wait(attempt, response.headers.get("retry-after"))
                continue
            if response.status_code >= 400:
                raise RemoteError(f"{url} answered {response.status_code}: {_message(response)}", response.status_code)
            try:
                return response.json()
            except ValueError:
                raise RemoteError(
                    f"{url} answered {response.status_code} with no JSON: {response.text[:120]!r}"
                ) from None
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        try:
            wait = float(retry_after) if retry_after is not None else self.backoff * 2**attempt
        except ValueError:
            wait = self.backoff * 2**attempt
        time.sleep(min(max(wait, 0.0), MAX_RETRY_WAIT))

    def close(self) -> None:
        self._http.close()


def _message(response: httpx.Response) -> str:
    """The server's own words: OpenAI's {"error": {"message"}}, FastAPI's {"detail"}, or the text."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])[:300]
    if isinstance(body, dict) and body.get("detail"):
        return str(body["detail"])[:300]
    return str(body)[:200]
