"""`decodelab serve`: an OpenAI-compatible server with token probabilities, a live trace stream, and the web
explorer at `/`. Model work runs on one thread off the event loop (see `runner`); what a request may cost
is bounded by `limits.ServerLimits`."""

from __future__ import annotations

from collections.abc import Iterable

from decodelab.server.app import create_app
from decodelab.server.limits import ServerLimits

__all__ = ["ServerLimits", "create_app", "serve"]


def serve(
    lm,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    extra_hosts: Iterable[str] = (),
    cors_origins: Iterable[str] = (),
    **limits,
) -> None:
    """Serve `lm` until interrupted. Binds to loopback unless `host` says otherwise; `limits` are
    `ServerLimits` fields."""
    import uvicorn

    from decodelab.server.protocol import uvicorn_config

    app = create_app(lm, api_key=api_key, host=host, extra_hosts=extra_hosts, cors_origins=cors_origins, **limits)
    uvicorn.Server(uvicorn_config(app, host, port, app.state.decodelab.limits)).run()
