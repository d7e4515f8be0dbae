"""llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`) in a subprocess on a free loopback port.

It runs from .venv-anchors, where `make bench-anchors` (a prerequisite of `make test`) builds llama.cpp for this CPU
and installs the server's packages; decodelab's own venv has no llama.cpp. Another engine serving the GGUF that
decodelab's bundled model is converted from: the counterpart for the remote backend's tests.

    with llama_server(bundled_gguf_path()) as server:
        httpx.post(f"{server.url}/v1/completions", json={"model": server.model, "prompt": "Hi", "logprobs": 5})
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

ANCHORS_VENV = Path(__file__).resolve().parents[1] / ".venv-anchors"
ANCHORS_PYTHON = ANCHORS_VENV / "bin" / "python"
SERVER_STAMP = ANCHORS_VENV / ".decodelab-anchors-server"  # written by `make bench-anchors` once the server imports
NOT_INSTALLED = "llama-cpp-python's server is not in .venv-anchors: run `make bench-anchors`"
START_TIMEOUT_SECONDS = 300.0  # loading takes ~2 s idle; a loaded 2-core machine can stretch it a hundredfold
STOP_TIMEOUT_SECONDS = 20.0  # after SIGTERM, before SIGKILL
# The server reads its settings from the environment too (pydantic-settings: MODEL, N_CTX, ...), and HOST, PORT and
# CONFIG_FILE there override the command line; so it gets only these variables from ours.
PASSED_ENVIRONMENT = ("PATH", "HOME", "TMPDIR", "LANG", "LC_ALL")


def server_installed() -> bool:
    return ANCHORS_PYTHON.is_file() and SERVER_STAMP.is_file()


@dataclass(frozen=True)
class LlamaServer:
    url: str  # http://127.0.0.1:PORT, no trailing slash
    model: str  # the model id the server reports at GET /v1/models (its --model_alias)
    process: subprocess.Popen
    log: Path  # the server's stdout and stderr (llama.cpp's loading and timing lines)


@contextlib.contextmanager
def llama_server(
    gguf_path: Path | str,
    *,
    model_alias: str | None = None,  # default: the GGUF file's stem
    n_ctx: int = 2048,  # the context window; prompt plus completion must fit
    logits_all: bool = True,  # keep every position's logits: llama-cpp-python refuses `logprobs` without it
    seed: int = 0,  # the server's default seed, for requests that send none
    n_threads: int = 1,  # decode threads; one keeps it a light neighbour on a shared 2-core machine
    n_threads_batch: int = 1,  # prompt-processing threads
    start_timeout: float = START_TIMEOUT_SECONDS,
    **options: object,  # any other `python -m llama_cpp.server --NAME VALUE` setting (True/False as true/false)
) -> Iterator[LlamaServer]:
    """Start the server, wait until GET /v1/models answers, yield it, and stop it (its whole process group) however
    the block ends. A server that dies or never answers raises RuntimeError with the end of its log."""
    if not server_installed():
        raise RuntimeError(NOT_INSTALLED)
    gguf_path = Path(gguf_path)
    settings = {
        "model": gguf_path,
        "model_alias": model_alias or gguf_path.stem,
        "host": "127.0.0.1",
        "port": _free_port(),
        "n_ctx": n_ctx,
        "logits_all": logits_all,
        "seed": seed,
        "n_threads": n_threads,
        "n_threads_batch": n_threads_batch,
        "use_mlock": False,  # no pinned memory on a shared machine
        **options,
    }
    command = [str(ANCHORS_PYTHON), "-m", "llama_cpp.server"]
    for name, value in settings.items():
        command += [f"--{name}", _argument(value)]
    url = f"http://127.0.0.1:{settings['port']}"
    environment = {name: os.environ[name] for name in PASSED_ENVIRONMENT if name in os.environ}
    with tempfile.TemporaryDirectory(prefix="llama-server-") as directory:
        log = Path(directory) / "server.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, env=environment, start_new_session=True
            )
        try:
            model = _wait_until_ready(url, process, log, start_timeout)
            yield LlamaServer(url=url, model=model, process=process, log=log)
        finally:
            _stop(process)


def _argument(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_ready(url: str, process: subprocess.Popen, log: Path, timeout: float) -> str:
    """Poll GET /v1/models until it answers 200; return the first model's id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama-cpp-python's server exited with {process.returncode}:\n{_tail(log)}")
        try:
            answer = httpx.get(f"{url}/v1/models", timeout=10)
        except httpx.TransportError:  # not listening yet (the model loads before uvicorn binds the port)
            time.sleep(0.25)
            continue
        if answer.status_code == 200:
            return answer.json()["data"][0]["id"]
        time.sleep(0.25)
    raise RuntimeError(f"llama-cpp-python's server did not answer within {timeout:.0f} s:\n{_tail(log)}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn shuts down cleanly), SIGKILL to what is left after a while."""
    for signal_number, wait in ((signal.SIGTERM, STOP_TIMEOUT_SECONDS), (signal.SIGKILL, STOP_TIMEOUT_SECONDS)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
            break
    # a child that outlived the server itself (none is expected) still goes with the group
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
