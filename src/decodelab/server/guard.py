"""What every request passes before a route sees it: the Host check, the API key, and a bounded, valid body.

Both are pure ASGI middleware (Starlette's BaseHTTPMiddleware would hide client disconnects from the routes,
and a request whose client left must still be cancelled). Order, outermost first:

    HostGuard     the Host header names this server (Starlette's TrustedHostMiddleware): no DNS rebinding
    RequestGuard  on /v1 and /api: the API key (before any body is read), then the body: at most
                  `max_body_bytes`, sent within `body_timeout`, UTF-8 JSON whose strings are real Unicode
                  (no lone surrogates) and hold at most `max_prompt_chars` characters in all
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterable

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from decodelab.server.errors import APIError
from decodelab.server.limits import ServerLimits

PROTECTED_PREFIXES = ("/v1/", "/api/", "/tokenize", "/detokenize", "/tokenizer_info")  # vLLM's sit at the root
LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]")
_ANY_ADDRESS = {"0.0.0.0", "::", "[::]", ""}


def allowed_hosts(host: str, extra: Iterable[str] = ()) -> list[str]:
    """The Host names a server bound to `host` answers to: loopback names, `host` itself, and `extra`."""
    names = list(LOCAL_HOSTS)
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if bound not in _ANY_ADDRESS:
        names.append(bound)
    names.extend(name.strip().lower() for name in extra if name.strip())
    return list(dict.fromkeys(names))


def _reply(status: int, message: str, **details) -> JSONResponse:
    return APIError(status, message, **details).response()


class HostGuard:
    """Starlette's TrustedHostMiddleware, answering a refused Host with our one-line JSON error."""

    def __init__(self, app: ASGIApp, hosts: list[str]):
        async def host_accepted(scope: Scope, receive: Receive, send: Send) -> None:
            scope["decodelab.host_accepted"] = True
            await app(scope, receive, send)

        self.hosts = hosts
        self.trusted = TrustedHostMiddleware(host_accepted, allowed_hosts=hosts, www_redirect=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.trusted(scope, receive, send)
            return
        refusal = self._refusal(scope)

        async def send_or_explain(message: Message) -> None:
            if scope.get("decodelab.host_accepted"):
                await send(message)
            elif message["type"] == "http.response.start":
                await send({"type": "http.response.start", "status": 400, "headers": refusal.raw_headers})
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                await send({"type": "http.response.body", "body": refusal.body})

        await self.trusted(scope, receive, send_or_explain)

    def _refusal(self, scope: Scope) -> JSONResponse:
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        return _reply(
            400,
            f"this server does not answer to the Host {host!r} (a guard against DNS rebinding): "
            f"use one of {', '.join(self.hosts)}, or start decodelab serve with --allowed-hosts "
            f"{host.rsplit(':', 1)[0] if host and not host.endswith(']') else host or 'NAME'}",
            code="host_not_allowed",
        )


class RequestGuard:
    def __init__(self, app: ASGIApp, limits: ServerLimits, api_key: str | None):
        self.app, self.limits = app, limits
        self.api_key = api_key.encode("utf-8") if api_key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        refusal = self._check_key(headers) or self._check_length(headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            body = await self._read_body(receive)
        except _ClientGone:
            return
        except _Refused as refused:
            await refused.response(scope, receive, send)
            return
        refusal = self._check_text(body, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _check_key(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """401 unless `Authorization: Bearer <key>` (bytes compared as sent, so a UTF-8 key works)."""
        if self.api_key is None:
            return None
        scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
        if scheme.lower() == b"bearer" and secrets.compare_digest(given.strip(), self.api_key):
            return None
        what = "no API key was sent" if not given.strip() else "the API key is wrong"
        return _reply(
            401,
            f"{what}: send the header 'Authorization: Bearer <key>' with the key given to "
            "decodelab serve (--api-key or DECODELAB_API_KEY)",
            type="authentication_error",
            code="invalid_api_key",
        )

    def _check_length(self, headers: dict[bytes, bytes]) -> JSONResponse | None:
        declared = headers.get(b"content-length")
        if declared is None:
            return None
        if not declared.isdigit():
            return _reply(400, f"the Content-Length header must be a number of bytes, got {declared[:40]!r}")
        if int(declared) > self.limits.max_body_bytes:
            return self._too_large(f"{int(declared)} bytes")
        return None

    def _too_large(self, size: str) -> JSONResponse:
        return _reply(
            413,
            f"the request body is {size} and this server "
            f"takes at most {self.limits.max_body_bytes} (decodelab serve --max-body-bytes): "
            "send a shorter prompt",
            code="request_too_large",
        )

    async def _read_body(self, receive: Receive) -> bytes:
        """The whole body, refused once it passes `max_body_bytes` or takes longer than `body_timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.body_timeout
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _Refused(
                    _reply(
                        408,
                        f"the request body did not arrive within {self.limits.body_timeout:g} s: send it at once",
                        code="request_timeout",
                    )
                ) from None
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                raise _Refused(self._too_large(f"over {self.limits.max_body_bytes} bytes"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    def _check_text(self, body: bytes, headers: dict[bytes, bytes]) -> JSONResponse | None:
        """400 for a JSON body that is not UTF-8, nests too deep, holds a lone surrogate or too much text.
        Other JSON faults are left to the route's own validation, which names the field."""
        if not body or b"json" not in headers.get(b"content-type", b""):
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as error:
            return _reply(
                400,
                f"the request body is not UTF-8 (byte {body[error.start]:#04x} at offset "
                f"{error.start}): send JSON encoded as UTF-8",
            )
        try:
            document = json.loads(text)
        except RecursionError:
            return _reply(400, "the request body nests JSON too deeply: send a flat JSON object")
        except ValueError:
            return None  # the route says what is wrong with it
        place, characters = text_problems(document)
        if place is not None:
            return _reply(
                400,
                f"{place} holds a lone UTF-16 surrogate, which is not a character: send valid "
                "Unicode text (an emoji as a surrogate pair, or as UTF-8)",
            )
        if characters > self.limits.max_prompt_chars:
            return _reply(
                400,
                f"the request holds {characters} characters of text and this server takes at most "
                f"{self.limits.max_prompt_chars} (decodelab serve --max-prompt-chars): send a "
                "shorter prompt",
                code="prompt_too_long",
            )
        return None


def text_problems(document: object) -> tuple[str | None, int]:
    """(where the first string with a lone surrogate is, e.g. 'messages.0.content', or None; total characters
    in all strings). Walks iteratively: any depth json.loads accepts is fine."""
    characters = 0
    pending: list[tuple[str, object]] = [("", document)]
    while pending:
        place, value = pending.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{place}.{key}" if place else str(key)
                pending.append((where, key))
                pending.append((where, item))
        elif isinstance(value, list):
            pending.extend((f"{place}.{index}" if place else str(index), item) for index, item in enumerate(value))
        elif isinstance(value, str):
            characters += len(value)
            if not _is_unicode(value):
                return place or "the request body", characters
    return None, characters


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` that hands the app the body already read, then passes through (so disconnects still arrive)."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


class _ClientGone(Exception):
    pass


class _Refused(Exception):
    def __init__(self, response: JSONResponse):
        super().__init__(response.status_code)
        self.response = response
