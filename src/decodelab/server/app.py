"""The FastAPI application: OpenAI-compatible routes, decodelab's explorer routes, and the web page at `/`."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass
from importlib import resources

from fastapi import Depends, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from decodelab.server.errors import APIError, install_error_handlers
from decodelab.server.runner import Runner
from decodelab.server.sessions import SessionStore

STATIC = resources.files("decodelab.server") / "static"


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

    # A dependency, not an HTTP middleware: Starlette's BaseHTTPMiddleware hides client disconnects from
    # the routes, and a non-streaming request whose client left must still be cancelled.
    app.include_router(openai_api.router, dependencies=[Depends(require_api_key)])
    app.include_router(explorer_api.router, dependencies=[Depends(require_api_key)])
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    return app


async def require_api_key(request: Request) -> None:
    """401 unless the request carries `Authorization: Bearer <key>` (when the server has a key)."""
    key = request.app.state.decodelab.api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), key.encode()):
        what = "no API key was sent" if not given else "the API key is wrong"
        raise APIError(401, f"{what}: send the header 'Authorization: Bearer <key>' with the key given to "
                            "decodelab serve --api-key", type="authentication_error", code="invalid_api_key")
