"""The FastAPI application: OpenAI-compatible routes, decodelab's explorer routes, and the web page at `/`."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from decodelab.server.errors import error_body, install_error_handlers
from decodelab.server.runner import Runner
from decodelab.server.sessions import SessionStore

STATIC = resources.files("decodelab.server") / "static"
PROTECTED = ("/v1/", "/api/")


@dataclass
class ServerState:
    lm: object  # decodelab.LM
    runner: Runner
    sessions: SessionStore
    api_key: str | None = None


def create_app(lm, *, api_key: str | None = None, max_queue: int = 8, max_sessions: int = 32) -> FastAPI:
    """The server for one loaded model. `max_queue` bounds generations admitted at once (the rest get 429)."""
    from decodelab.server import explorer_api, openai_api

    state = ServerState(lm, Runner(max_queue), SessionStore(max_sessions), api_key)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        state.runner.shutdown()

    app = FastAPI(title="decodelab", version="0.1.0", docs_url="/docs", redoc_url=None, lifespan=lifespan)
    app.state.decodelab = state
    install_error_handlers(app)

    @app.middleware("http")
    async def require_api_key(request: Request, call_next):
        if state.api_key is not None and request.url.path.startswith(PROTECTED):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {state.api_key}".encode()):
                what = "no API key was sent" if not given else "the API key is wrong"
                return JSONResponse(
                    error_body(f"{what}: send the header 'Authorization: Bearer <key>' with the key given to "
                               "decodelab serve --api-key", code="invalid_api_key"),
                    status_code=401,
                )
        return await call_next(request)

    app.include_router(openai_api.router)
    app.include_router(explorer_api.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    return app
