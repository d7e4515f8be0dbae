"""`decodelab serve`: an OpenAI-compatible server with token probabilities, a live trace stream, and the web
explorer at `/`. Model work runs on one thread off the event loop (see `runner`)."""

from __future__ import annotations

from decodelab.server.app import create_app

__all__ = ["create_app", "serve"]


def serve(lm, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, max_queue: int = 8) -> None:
    """Serve `lm` until interrupted. Binds to loopback unless `host` says otherwise."""
    import uvicorn

    uvicorn.run(create_app(lm, api_key=api_key, max_queue=max_queue), host=host, port=port, log_level="info")
