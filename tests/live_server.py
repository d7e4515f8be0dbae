"""A real uvicorn server on a free loopback port, in a background thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn

from decodelab.server import create_app
from decodelab.server.protocol import uvicorn_config


class LiveServer:
    def __init__(self, lm, **options):
        self.app = create_app(lm, **options)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(self.app, "127.0.0.1", self.port, self.state.limits, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def state(self):
        """The server's state: `.runner.stats` counters, `.sessions`, `.lm`."""
        return self.app.state.decodelab

    def start(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.contextmanager
def live_server(lm, **options) -> Iterator[LiveServer]:
    server = LiveServer(lm, **options).start()
    try:
        yield server
    finally:
        server.stop()
