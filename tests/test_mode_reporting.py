"""A fast mode is never silent: the CLI's flags reach `load()`, and its traces, tables, JSON, `decodelab models`,
`/v1/models` and `/api/info` say which mode computed the numbers (and say nothing new on the exact path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

import decodelab

EXACT = {"dtype": "float32", "quantization": "none", "compiled": False, "exact": True, "label": "float32"}
INT8 = {"dtype": "float32", "quantization": "int8", "compiled": False, "exact": False, "label": "float32, int8 weights"}
INT8_NOTE = "mode: float32, int8 weights (fast mode: not the exact path)"
LOADING_COMMANDS = [  # every subcommand that loads a model, with its required arguments
    ["tokens", "x"],
    ["next", "x"],
    ["generate", "x"],
    ["beam", "x"],
    ["score", "x"],
    ["compare", "x"],
    ["plot", "next", "x", "--out", "x.png"],
    ["serve"],
]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decodelab", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """stderr's lines that say something: transformers' progress bars are not errors."""
    return [line for line in result.stderr.splitlines() if "error" in line]


@pytest.mark.parametrize("command", LOADING_COMMANDS, ids=lambda command: command[0])
def test_every_loading_command_takes_the_mode_flags(command):
    from decodelab.cli import build_parser

    parser = build_parser()
    default = parser.parse_args(command)
    assert (default.dtype, default.quantize, default.compile, default.backend) == ("float32", "none", False, "auto")
    fast = parser.parse_args([*command, "--dtype", "bfloat16", "--quantize", "int4", "--compile"])
    assert (fast.dtype, fast.quantize, fast.compile) == ("bfloat16", "int4", True)


def test_tiny_generate_takes_the_compute_flags():
    from decodelab.cli import build_parser

    args = build_parser().parse_args(["tiny", "generate", "x", "--checkpoint", "ckpt", "--quantize", "int8"])
    assert (args.model, args.quantize, args.dtype, args.compile, args.backend) == (
        "ckpt",
        "int8",
        "float32",
        False,
        "auto",
    )


def test_int8_is_stated_in_the_trace_and_the_json(tiny_llama_dir):
    model = ["--model", str(tiny_llama_dir), "--backend", "native", "--quantize", "int8"]
    trace = run("generate", "Once upon a time", *model, "--greedy", "--max-new-tokens", "3", "--trace")
    assert trace.returncode == 0, trace.stderr
    lines = trace.stdout.splitlines()
    assert lines[0] == INT8_NOTE and lines[1].startswith("  0  Once␣upon␣a␣time →")

    table = run("next", "Once upon a time", *model, "--top", "3")
    assert table.stdout.splitlines()[:2] == [INT8_NOTE, "rank      id  token            prob   logprob"]

    payload = json.loads(run("next", "Once upon a time", *model, "--top", "3", "--json").stdout)
    assert payload["mode"] == INT8
    expected = decodelab.load(tiny_llama_dir, backend="native", quantize="int8").next_token_distribution(
        "Once upon a time"
    )
    assert [c["id"] for c in payload["top"]] == [c.id for c in expected.top(3)]  # the flags reached load()

    streamed = run("generate", "Once upon a time", *model, "--greedy", "--max-new-tokens", "3")
    assert INT8_NOTE in streamed.stderr and "mode:" not in streamed.stdout  # standard output is the text alone


def test_the_exact_default_says_so_in_json_and_adds_nothing_to_tables(tiny_llama_dir):
    model = ["--model", str(tiny_llama_dir), "--backend", "native"]
    payload = json.loads(run("score", "Once upon a time", *model, "--json").stdout)
    assert payload["mode"] == EXACT
    finals = [
        json.loads(line)
        for line in run("generate", "Hi", *model, "--max-new-tokens", "2", "--json").stdout.splitlines()
    ]
    assert finals[-1]["mode"] == EXACT and "mode" not in finals[0]  # on each row's result, not on every step
    table = run("score", "Once upon a time", *model)
    assert table.returncode == 0 and "mode" not in table.stdout and "mode" not in table.stderr


def test_quantize_on_the_transformers_backend_is_one_clear_error(tiny_llama_dir):
    result = run("next", "Hi", "--model", str(tiny_llama_dir), "--backend", "transformers", "--quantize", "int4")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = error_lines(result)
    assert line.startswith("decodelab: error: quantize runs on the native backend only") and "drop --quantize" in line


def test_an_unknown_quantization_is_argparse_one_line_error():
    result = run("next", "Hi", "--quantize", "int3")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "decodelab next: error: argument --quantize: invalid choice: 'int3' (choose from 'none', 'int8', 'int4') "
        "(see `decodelab next --help`)"
    ]


def test_models_names_the_default_mode_the_fast_ones_and_each_backend(bundled):
    text = run("models")
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split() == ["kind", "name", "size", "backend", "path"]
    assert (
        "modes: every model loads in float32 (the exact path) unless asked; fast modes: --dtype bfloat16|float16 "
        "(any backend), --quantize int8|int4 and --compile (native backend only)"
    ) in text.stdout
    listing = json.loads(run("models", "--json").stdout)
    assert listing["modes"]["default"] == EXACT
    assert listing["modes"]["quantize"] == ["none", "int8", "int4"]
    rows = {row["kind"]: row for row in listing["models"]}
    assert rows["bundled"]["backend"] == "native"  # what bundled.backend is: the backend that quantizes


def test_server_reports_the_exact_default(server):
    info = httpx.get(server.url + "/api/info").json()
    assert info["mode"] == EXACT and info["compile_seconds"] is None
    (model,) = httpx.get(server.url + "/v1/models").json()["data"]
    assert model["decodelab"]["mode"] == EXACT
    assert httpx.get(f"{server.url}/v1/models/{model['id']}").json() == model


def test_server_reports_int8_in_info_models_and_fingerprint(tiny_llama_dir):
    import openai

    from live_server import live_server

    lm = decodelab.load(tiny_llama_dir, backend="native", quantize="int8")
    with live_server(lm) as running:
        assert httpx.get(running.url + "/api/info").json()["mode"] == INT8
        client = openai.OpenAI(base_url=running.url + "/v1", api_key="unused", max_retries=0)
        (model,) = client.models.list().data  # the OpenAI fields still parse; decodelab's rides along
        assert model.id == lm.name and model.owned_by == "decodelab"
        assert (model.model_extra or {})["decodelab"]["mode"] == INT8
        reply = client.completions.create(model=lm.name, prompt="Hi", max_tokens=2)
        assert reply.system_fingerprint == f"decodelab-{decodelab.__version__}-float32-int8"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_decodelab_serve_passes_the_flags_and_says_the_mode(tiny_llama_dir):
    port = free_port()
    command = ["serve", "--model", str(tiny_llama_dir), "--backend", "native", "--quantize", "int8"]
    process = subprocess.Popen(
        [sys.executable, "-m", "decodelab", *command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "decodelab serve did not answer"
                time.sleep(0.2)
        assert info["mode"] == INT8
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert f"in a fast mode (float32, int8 weights: not the exact path) at http://127.0.0.1:{port}/" in output


@pytest.mark.slow
def test_compile_prints_its_warm_up_and_reports_the_mode(tiny_llama_dir):
    result = run("next", "Hi", "--model", str(tiny_llama_dir), "--backend", "native", "--compile", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mode"]["compiled"] is True
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("decodelab:")]
    assert line.startswith("decodelab: compiled the decode step in ") and line.endswith(
        " s (float32, compiled); later steps in this process reuse it"
    )


@pytest.mark.slow
def test_the_page_names_a_fast_mode(tiny_llama_dir):
    playwright_api = pytest.importorskip("playwright.sync_api")
    from browser import CHROMIUM, chromium  # the browser the page tests use
    from live_server import live_server

    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    lm = decodelab.load(tiny_llama_dir, backend="native", quantize="int8")
    with live_server(lm) as running, chromium() as browser:
        page = browser.new_page()
        page.goto(running.url)
        playwright_api.expect(page.locator("#model-info")).to_contain_text(
            "fast mode: float32, int8 weights (not the exact path)"
        )
