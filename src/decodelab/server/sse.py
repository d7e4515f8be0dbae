"""Server-sent events (`data: <json>` frames, optionally named) and JSON that never holds NaN."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# How a route that may stream says so in the OpenAPI schema (JSON when `stream` is false).
STREAM_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/json": {}, "text/event-stream": {}},
        "description": "JSON, or server-sent events when streaming",
    }
}


def finite(value: Any) -> Any:
    """`value` with NaN and infinities replaced by None (JSON has no such numbers)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def event(data: dict | str, name: str | None = None) -> str:
    payload = data if isinstance(data, str) else json.dumps(finite(data), ensure_ascii=False)
    return (f"event: {name}\n" if name else "") + f"data: {payload}\n\n"


class EventStream(StreamingResponse):
    """An SSE response that calls `on_close` once it is over however it ended: finished, failed, or the
    client gone before or during the stream (the runner slot it holds must always come back)."""

    def __init__(self, frames: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(frames, media_type="text/event-stream", headers=SSE_HEADERS)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
