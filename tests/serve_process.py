"""`decodelab serve` as a subprocess on a free loopback port, as a user runs it: a context manager."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

START_DEADLINE = 180  # seconds: loading the model on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def decodelab_serve(log_dir: Path, *options: str) -> Iterator[tuple[str, str, subprocess.Popen]]:
    """Yields the server's root URL, its model's name and its process; stops it in every case."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"serve-{port}.log"
    with log_path.open("w") as log:  # a file, not a pipe: a full pipe would stall the server
        process = subprocess.Popen(
            [sys.executable, "-m", "decodelab", "serve", "--port", str(port), *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONIOENCODING": "utf-8"},
        )
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                models = httpx.get(url + "/v1/models", timeout=5).json()
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"decodelab serve did not answer on {url}:\n{log_path.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        (model,) = models["data"]
        yield url, model["id"], process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
