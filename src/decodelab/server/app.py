"""The FastAPI application: OpenAI-compatible routes, decodelab's explorer routes, and the web page at `/`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles

from decodelab.server.errors import install_error_handlers
from decodelab.server.guard import HostGuard, RequestGuard, allowed_hosts
from decodelab.server.limits import ServerLimits
from decodelab.server.runner import Runner
from decodelab.server.sessions import SECRET_HEADER, SessionStore
from decodelab.server.stats import prometheus_text

if TYPE_CHECKING:
    from decodelab.model import LM

STATIC = resources.files("decodelab.server") / "static"


@dataclass
class ServerState:
    lm: LM
    runner: Runner
    sessions: SessionStore
    limits: ServerLimits
    api_key: str | None = None


def create_app(
    lm: LM,
    *,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    extra_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    **limits,
) -> FastAPI:
    """The server for one loaded model. `limits` are `ServerLimits` fields (max_batch=16, max_body_bytes, ...);
    `host` and `extra_hosts` are the Host names it answers to besides localhost."""
    from decodelab.server import explorer_api, openai_api, session_api, tokenizer_api

    bounds = ServerLimits(**limits)
    state = ServerState(
        lm,
        Runner(bounds.max_queue, bounds.max_batch_tokens, bounds.max_batch, bounds.prefill_chunk),
        SessionStore(bounds.max_sessions, bounds.max_session_tokens, bounds.session_ttl),
        bounds,
        api_key,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.runner.shutdown()

    app = FastAPI(title="decodelab", version="0.1.0", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.decodelab = state
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(explorer_api.router)
    app.include_router(session_api.router)
    app.include_router(tokenizer_api.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> PlainTextResponse:
        """The stats (see `server.stats`) for Prometheus."""
        text = prometheus_text(state.runner.stats, state.runner.max_batch, len(state.sessions))
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    app.openapi = _without_fastapi_422(app)  # type: ignore[method-assign]  # FastAPI's documented way
    # Outermost last: the Host check, then CORS (only when asked for), then the key and the body.
    app.add_middleware(RequestGuard, limits=bounds, api_key=api_key)
    origins = list(cors_origins)
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", SECRET_HEADER],
        )
    app.add_middleware(HostGuard, hosts=allowed_hosts(host, extra_hosts))
    return app


def _without_fastapi_422(app: FastAPI):
    """FastAPI documents a 422 for every route; this server answers validation errors with 400 (as OpenAI
    does), which ERROR_RESPONSES declares. The schema says what the server does."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = app.openapi_schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    operation.get("responses", {}).pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return app.openapi_schema

    return openapi
