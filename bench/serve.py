"""Throughput and latency of `decodelab serve` under concurrent streaming clients: does the server batch?

    python bench/serve.py [--modes exact,int8,int4] [--levels 1,4,8,16] [--tokens 128] [--max-batch N]
                          [--server-arg=--flag=value ...]

Each mode (`exact`, `bfloat16`, `int8`, `int4`, `compiled`, or a combination such as `int4+compiled`) runs as its
own `decodelab serve` process on the bundled model, one after another. After one unreported warm-up request, each
level of `--levels` sends that many concurrent streaming `POST /v1/completions` (greedy, a distinct short prompt
per client, stop tokens biased off so each makes exactly `--tokens` tokens; checked against `usage`). Measured on
the client side:
  tok/s       all tokens of the level / wall time from the first request sent to the last stream finished
  x 1 stream  that rate over the 1-stream level's: a server that batches grows it with the streams
              (goal: >= 4x at 8 streams, >= 6x at 16); one that serves a request at a time stays near 1x
  TTFT        request sent -> first chunk with text, per stream (p50 and p95 over the level's streams)
  ITL         gaps between successive chunks with text (p50 and p95 over all the level's gaps); a chunk holding
              an incomplete UTF-8 character waits for the next token, so a gap may span two tokens
`GET /api/stats` is printed after each level as the server reports it (counters are cumulative). The clients run
in this process and share the cores with the server. A level during which other processes kept more than 10% of
the cores busy is flagged: its figures are unreliable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import httpx

# mode word -> its `decodelab serve` flags; a mode joins words with "+" (int4+compiled)
MODE_FLAGS = {
    "exact": [],
    "bfloat16": ["--dtype", "bfloat16"],
    "int8": ["--quantize", "int8"],
    "int4": ["--quantize", "int4"],
    "compiled": ["--compile"],
}
GOALS = {8: 4.0, 16: 6.0}  # streams -> the aggregate rate they should reach, in multiples of one stream's
TOPICS = ("a dragon", "the sea", "a robot", "a lost key", "the moon", "a baker", "a storm", "a cat")
WARM_UP_TOKENS = 8
BUSY_SHARE = 0.1  # others' share of the cores above which a level is flagged


class BenchError(Exception):
    """Something the run cannot go on from: the message is the one line printed."""


def mode_flags(mode: str) -> list[str]:
    words = mode.split("+")
    if any(word not in MODE_FLAGS for word in words) or ("exact" in words and len(words) > 1):
        raise argparse.ArgumentTypeError(
            f"a mode is 'exact' or {'/'.join(list(MODE_FLAGS)[1:])} joined by +, got {mode!r}"
        )
    if "int8" in words and "int4" in words:
        raise argparse.ArgumentTypeError(f"a mode quantizes to int8 or int4, not both, got {mode!r}")
    return [flag for word in words for flag in MODE_FLAGS[word]]


def positive_list(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        levels = []
    if not levels or min(levels) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers >= 1, got {text!r}")
    return levels


def cpu_seconds(server_pid: int) -> tuple[float, float] | None:
    """CPU seconds spent so far by all processes (busy, /proc/stat) and by this one and the server; None off Linux.
    A copy of bench/anchors/llama_cpp_rates.py's `cpu_seconds` (that module imports llama_cpp, absent here),
    which also counts the server's threads as ours."""
    try:
        fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        server = Path(f"/proc/{server_pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    tick = os.sysconf("SC_CLK_TCK")
    own = resource.getrusage(resource.RUSAGE_SELF)
    ours = own.ru_utime + own.ru_stime + (int(server[11]) + int(server[12])) / tick  # utime, stime
    return (user + nice + system + irq + softirq) / tick, ours


def others_share(before: tuple[float, float] | None, after: tuple[float, float] | None, seconds: float) -> float:
    """The share of all cores other processes used between `before` and `after` (0 when unknown)."""
    if before is None or after is None:
        return 0.0
    others = (after[0] - before[0]) - (after[1] - before[1])
    return max(others, 0.0) / (seconds * (os.cpu_count() or 1))


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, linearly interpolated; NaN when there are none."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Stream:
    ttft: float  # seconds from the request sent to the first chunk with text
    gaps: list[float]  # seconds between successive chunks with text
    tokens: int  # usage.completion_tokens


@dataclass
class Level:
    streams: int
    tokens_per_s: float
    ttft: list[float]
    gaps: list[float]
    busy: float  # share of the cores other processes kept busy meanwhile
    stats: dict


async def one_stream(client: httpx.AsyncClient, model: str, prompt: str, tokens: int, bias: dict) -> Stream:
    body = dict(
        model=model,
        prompt=prompt,
        max_tokens=tokens,
        temperature=0,
        logit_bias=bias,
        stream=True,
        stream_options={"include_usage": True},
    )
    sent = time.perf_counter()
    arrivals: list[float] = []
    usage = None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"POST /v1/completions answered {response.status_code}: {response.text[:300]}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if "error" in chunk:
                raise BenchError(f"the stream for {prompt!r} failed: {chunk['error']}")
            if any(choice.get("text") for choice in chunk.get("choices", [])):
                arrivals.append(time.perf_counter())
            usage = chunk.get("usage") or usage
    made = usage["completion_tokens"] if usage else None
    if made != tokens or not arrivals:
        raise BenchError(f"the stream for {prompt!r} made {made} tokens ({len(arrivals)} text chunks), not {tokens}")
    return Stream(arrivals[0] - sent, [b - a for a, b in pairwise(arrivals)], made)


async def run_level(url: str, server_pid: int, info: dict, streams: int, tokens: int) -> Level:
    bias = {str(token): -100 for token in info["stop_ids"]}
    prompts = [f"Story {i + 1}. Once upon a time, {TOPICS[i % len(TOPICS)]}" for i in range(streams)]
    timeout = httpx.Timeout(600.0, connect=30.0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=httpx.Limits(max_connections=None)) as client:
        before, started = cpu_seconds(server_pid), time.perf_counter()
        done = await asyncio.gather(*(one_stream(client, info["model"], p, tokens, bias) for p in prompts))
        wall = time.perf_counter() - started
        busy = others_share(before, cpu_seconds(server_pid), wall)
        stats = (await client.get("/api/stats")).json()
    return Level(
        streams=streams,
        tokens_per_s=sum(stream.tokens for stream in done) / wall,
        ttft=[stream.ttft for stream in done],
        gaps=[gap for stream in done for gap in stream.gaps],
        busy=busy,
        stats=stats,
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def running_server(flags: list[str], startup_timeout: float) -> Iterator[tuple[str, int, dict]]:
    """A `decodelab serve` process on the bundled model: (base URL, pid, GET /api/info); terminated on exit."""
    port = free_port()
    command = [sys.executable, "-m", "decodelab", "serve", "--model", "bundled", "--port", str(port), *flags]
    print(f"$ {' '.join(command[1:])}", flush=True)
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)

        def log_tail() -> str:
            log.seek(0)
            return "".join(log.readlines()[-15:])

        try:
            url, started = f"http://127.0.0.1:{port}", time.perf_counter()
            while True:
                if server.poll() is not None:
                    raise BenchError(f"the server exited with status {server.returncode}:\n{log_tail()}")
                if time.perf_counter() - started > startup_timeout:
                    raise BenchError(f"no answer from {url}/api/info within {startup_timeout:.0f} s:\n{log_tail()}")
                with contextlib.suppress(httpx.TransportError):
                    answer = httpx.get(f"{url}/api/info", timeout=5.0)
                    if answer.status_code == 200:
                        break
                time.sleep(0.5)
            print(f"  up in {time.perf_counter() - started:.1f} s", flush=True)
            yield url, server.pid, answer.json()
        except BaseException as error:
            if server.poll() is not None and not isinstance(error, BenchError):  # a BenchError quotes it already
                print(f"server output:\n{log_tail()}", file=sys.stderr)
            raise
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def measure_mode(mode: str, args: argparse.Namespace) -> list[Level]:
    flags = mode_flags(mode) + (["--max-batch", str(args.max_batch)] if args.max_batch else [])
    if not any(arg.startswith("--max-queue") for arg in args.server_arg):
        flags += ["--max-queue", str(max(args.levels))]  # the default queue (8) would answer 16 streams with 429s
    with running_server(flags + args.server_arg, args.startup_timeout) as (url, pid, info):
        compiled = f", compile {info['compile_seconds']:.1f} s" if info.get("compile_seconds") else ""
        mode_info = info.get("mode")
        label = mode_info.get("label", mode_info) if isinstance(mode_info, dict) else mode_info
        print(f"  {info['model']}, mode {label}{compiled}", flush=True)
        asyncio.run(run_level(url, pid, info, 1, WARM_UP_TOKENS))
        levels = []
        for streams in args.levels:
            level = asyncio.run(run_level(url, pid, info, streams, args.tokens))
            rate = f"{level.tokens_per_s:.1f} tok/s, others kept {level.busy:.0%} of the cores busy"
            print(f"  {streams} stream{'s' * (streams > 1)}: {rate}")
            print(f"    /api/stats: {json.dumps(level.stats, separators=(',', ':'))}", flush=True)
            levels.append(level)
    return levels


def print_table(mode: str, levels: list[Level], tokens: int) -> None:
    one = next((level.tokens_per_s for level in levels if level.streams == 1), None)
    print(f"\n### {mode}: {tokens} tokens per stream, greedy\n")
    print("| level | streams | tok/s | x 1 stream | TTFT p50 (s) | TTFT p95 (s) | ITL p50 (ms) | ITL p95 (ms) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for level in levels:
        ratio = f"{level.tokens_per_s / one:.2f}x" if one else "-"
        ttft = [percentile(level.ttft, q) for q in (0.5, 0.95)]
        itl = [1000 * percentile(level.gaps, q) for q in (0.5, 0.95)]
        print(
            f"| {level.streams} | {level.streams} x {tokens} | {level.tokens_per_s:.1f} | {ratio} "
            f"| {ttft[0]:.2f} | {ttft[1]:.2f} | {itl[0]:.1f} | {itl[1]:.1f} |"
        )
    busy = [f"{level.streams} ({level.busy:.0%})" for level in levels if level.busy > BUSY_SHARE]
    if busy:
        print(f"\n(other processes kept the cores busy during levels {', '.join(busy)}: their rates are unreliable)")
    print()
    for streams, goal in GOALS.items():
        rate = next((level.tokens_per_s for level in levels if level.streams == streams), None)
        against = "one stream " if streams == min(GOALS) else ""
        if one is None or rate is None:
            print(f"{streams} streams: not measured (goal >= {goal:g}x)")
        else:
            met = "met" if rate / one >= goal else "not met"
            print(f"{streams} streams: {rate / one:.1f}x {against}(goal >= {goal:g}x): {met}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", type=lambda text: text.split(","), default=["exact", "int8", "int4"])
    parser.add_argument("--levels", type=positive_list, default=[1, 4, 8, 16], help="concurrent streams (1,4,8,16)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per stream (128)")
    parser.add_argument("--max-batch", type=int, default=None, help="passed to serve as --max-batch (not by default)")
    parser.add_argument("--server-arg", action="append", default=[], help="one more serve argument (repeatable)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for /api/info (300)")
    args = parser.parse_args()
    for mode in args.modes:
        try:
            mode_flags(mode)
        except argparse.ArgumentTypeError as error:
            parser.error(f"--modes: {error}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a terminated run still stops its server
    tables = {}
    try:
        for mode in args.modes:
            print(f"\n{mode}", flush=True)
            tables[mode] = measure_mode(mode, args)
    except BenchError as error:
        raise SystemExit(f"bench/serve.py: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("bench/serve.py: interrupted (the server was stopped)") from None
    for mode, levels in tables.items():
        print_table(mode, levels, args.tokens)


if __name__ == "__main__":
    main()
