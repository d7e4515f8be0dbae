"""A real uvicorn server on a free loopback port, in a background thread of the test process."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import uvicorn

from decodelab.server import create_app
from decodelab.server.protocol import uvicorn_config


class Pause:
    """The model thread held between two ticks (see `LiveServer.paused_when`)."""

    def __init__(self) -> None:
        self.reached, self.resumed = threading.Event(), threading.Event()

    def wait(self, what: str) -> None:
        """Until the model thread is held; `what` names the condition for the message if it never is."""
        assert self.reached.wait(600), f"the model thread never paused at {what}"

    def resume(self) -> None:
        self.resumed.set()


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

    @contextlib.contextmanager
    def paused_when(self, condition: Callable[[], bool]) -> Iterator[Pause]:
        """A block in which the model thread pauses between two ticks as soon as `condition()` holds, until
        `resume()` or the block's end. The condition is checked on the model thread, once a tick, by a call that
        queues itself again until it holds: a generate started in the block pauses after a known step, never
        at a moment in time. Routes that need the model thread answer once it resumes. (A session's newest
        step is whole at a pause, its forward done, but is handed to its stream at the next tick: a stream
        paused at step N has sent N - 1.)"""
        pause = Pause()
        runner = self.state.runner

        def check() -> None:  # on the model thread, between two ticks
            if pause.resumed.is_set():
                return
            if condition():
                pause.reached.set()
                pause.resumed.wait(600)
            else:
                time.sleep(0.005)  # no busy loop while nothing runs yet
                runner.call_soon(check)

        runner.call_soon(check)
        try:
            yield pause
        finally:
            pause.resume()

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
