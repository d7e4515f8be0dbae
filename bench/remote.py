"""What a model on a server costs the client, against a live `decodelab serve`, in one run.

    python bench/remote.py [--prompts 64] [--concurrency 8] [--tokens 32] [--repeats 3]

Starts `decodelab serve` on the bundled model (bench/serve.py's `running_server`) and loads it here with
`decodelab.load(url + "/v1")`, the remote backend. Measured on the client side:
  scoring    `--prompts` short texts through `decodelab.batch.score_jsonl` (one echo request each, every result a
             line of a JSONL file), one at a time, then `--concurrency` at a time, one run of each after a warm-up
             of a few texts: texts per second and the speed-up (goal: >= 3x once the server batches). Then the
             server's own share: the same echo requests sent bare (no client-side scoring), and the ceiling
             batching has on this CPU: the bundled model's forward of one text against `--concurrency` texts
             padded into one forward (what the server's scheduler runs), per text
  per step   the same `--tokens` greedy tokens written by step-by-step mode (`lm.generate`: one request per token,
             decodelab's own sampler chain on the reported logprobs) and by server-side sampling
             (`generate_on_server`: one request for all of them): ms per token each, and their ratio, the price
             of seeing and steering every step from the client
Each generation figure is the median of `--repeats` runs after an unreported warm-up. The client shares the cores
with the server; a measurement during which other processes kept more than 10% of the cores busy is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from serve import BUSY_SHARE, BenchError, cpu_seconds, others_share, running_server

import decodelab
from decodelab.batch import score_jsonl
from decodelab.remote.server_side import generate_on_server

SCORING_GOAL = 3.0  # texts per second at --concurrency, in multiples of one at a time
SUBJECTS = ("the sea", "a dragon", "the moon", "a robot", "a lost key", "a baker", "a storm", "a cat")
STORY = "Once upon a time, in a small village at the edge of a great forest, there lived"
WHY_SCORING_FALLS_SHORT = (
    "the server prefills the prompts of echo requests that wait together as one padded forward; on a CPU a short "
    "prompt's prefill is already mostly arithmetic, so one forward of {n} texts costs {ceiling:.1f}x less per text "
    "than {n} forwards at best (the ceiling above), and the client here shares the cores with the server"
)


@dataclass(frozen=True)
class Timing:
    seconds: float  # median of the repeats
    busy: float  # the largest share of the cores other processes kept busy during a repeat


def timed(run: Callable[[], None], repeats: int, server_pid: int) -> Timing:
    """`run` `repeats` times: the median wall time and the busiest repeat's share of others."""
    times, busy = [], 0.0
    for _ in range(repeats):
        before, started = cpu_seconds(server_pid), time.perf_counter()
        run()
        wall = time.perf_counter() - started
        times.append(wall)
        busy = max(busy, others_share(before, cpu_seconds(server_pid), wall))
    return Timing(statistics.median(times), busy)


def flag(timing: Timing) -> str:
    return f"  (others kept {timing.busy:.0%} of the cores busy: unreliable)" if timing.busy > BUSY_SHARE else ""


def scoring_run(lm: decodelab.LM, source: Path, directory: Path, concurrency: int) -> Callable[[], None]:
    """One scoring of the file `source` into a fresh output file, `concurrency` texts at a time."""

    def run() -> None:
        out = Path(tempfile.mkstemp(suffix=".jsonl", dir=directory)[1])
        out.unlink()  # a fresh file: nothing to resume
        summary = score_jsonl(lm, source, out, concurrency=concurrency, quiet=True)
        if summary.errors:
            first = next(line for line in out.read_text().splitlines() if '"error"' in line)
            raise BenchError(f"{summary.errors} texts failed to score, e.g. {first[:300]}")

    return run


def measure_scoring(lm: decodelab.LM, url: str, args: argparse.Namespace, server_pid: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        source = directory / "texts.jsonl"
        texts = [f" Note {n + 1}: a few words about {SUBJECTS[n % len(SUBJECTS)]}." for n in range(args.prompts)]
        source.write_text("".join(json.dumps({"id": n, "text": text}) + "\n" for n, text in enumerate(texts)))
        warm_up = directory / "warm-up.jsonl"
        warm_up.write_text("".join(source.read_text().splitlines(keepends=True)[: args.concurrency]))
        scoring_run(lm, warm_up, directory, args.concurrency)()
        print(f"\nscoring {args.prompts} short texts (one echo request each)", flush=True)
        one = timed(scoring_run(lm, source, directory, 1), 1, server_pid)
        print(f"  one at a time: {args.prompts / one.seconds:.1f} texts/s{flag(one)}", flush=True)
        many = timed(scoring_run(lm, source, directory, args.concurrency), 1, server_pid)
        print(f"  {args.concurrency} at a time: {args.prompts / many.seconds:.1f} texts/s{flag(many)}", flush=True)
    speed_up = one.seconds / many.seconds
    met = "met" if speed_up >= SCORING_GOAL else "not met"
    print(
        f"  speed-up at concurrency {args.concurrency}: {speed_up:.2f}x (goal >= {SCORING_GOAL:g}x): {met}",
        flush=True,
    )
    bare = {level: bare_echoes(url, lm.name, texts, level) for level in (1, args.concurrency)}
    print(
        f"  the server alone (bare echo requests): {args.prompts / bare[1]:.1f} texts/s one at a time, "
        f"{args.prompts / bare[args.concurrency]:.1f} at {args.concurrency}: "
        f"{bare[1] / bare[args.concurrency]:.2f}x",
        flush=True,
    )
    ceiling = batching_ceiling(texts[: args.concurrency])
    print(
        f"  the ceiling on this CPU: one text's forward {ceiling.one_ms:.0f} ms, {args.concurrency} texts in one padded "
        f"forward {ceiling.each_ms:.0f} ms each: {ceiling.ratio:.2f}x",
        flush=True,
    )
    if speed_up < SCORING_GOAL:
        print(f"  why: {WHY_SCORING_FALLS_SHORT.format(n=args.concurrency, ceiling=ceiling.ratio)}")


def bare_echoes(url: str, model: str, texts: list[str], concurrency: int) -> float:
    """Seconds to send every text as an echo request with top-20 logprobs, `concurrency` at a time, reading
    nothing of the answers but their status: the server's work without the client's scoring."""
    body = {"model": model, "max_tokens": 1, "echo": True, "logprobs": 20, "temperature": 0}

    async def run() -> float:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=300) as client:

            async def send(text: str) -> None:
                async with gate:
                    (await client.post("/v1/completions", json={**body, "prompt": text})).raise_for_status()

            await send(texts[0])  # warm-up
            started = time.perf_counter()
            await asyncio.gather(*(send(text) for text in texts))
            return time.perf_counter() - started

    return asyncio.run(run())


@dataclass(frozen=True)
class Ceiling:
    one_ms: float  # one text's forward alone
    each_ms: float  # per text, all of them padded into one forward
    ratio: float


def batching_ceiling(texts: list[str], repeats: int = 5) -> Ceiling:
    """The bundled model's forward of each text alone against all of them padded into one, in this process:
    what batching the server's prefills can save per text at most (medians of `repeats`)."""
    import torch

    from decodelab.work import PrefillChunk, run_prefills_together

    local = decodelab.load()
    backend = local.backend
    prompts = [torch.tensor([local.tokenizer.encode(text)]) for text in texts]

    def chunks() -> list[PrefillChunk]:
        return [PrefillChunk(backend, ids, backend.new_cache(1), keep_all=True) for ids in prompts]

    def alone() -> None:
        for chunk in chunks():
            chunk.run()

    def together() -> None:
        run_prefills_together(chunks())

    times = {}
    for name, run in (("alone", alone), ("together", together)):
        run()  # warm-up
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            samples.append(time.perf_counter() - started)
        times[name] = statistics.median(samples) / len(texts)
    return Ceiling(1000 * times["alone"], 1000 * times["together"], times["alone"] / times["together"])


def measure_steps(lm: decodelab.LM, args: argparse.Namespace, server_pid: int) -> None:
    print(f"\n{args.tokens} greedy tokens, median of {args.repeats}", flush=True)
    made: dict[str, list[int]] = {}
    requests: dict[str, int] = {}

    def step_by_step() -> None:
        before = lm.backend.requests
        made["step"] = lm.generate(STORY, greedy=True, max_new_tokens=args.tokens, stop_token_ids=()).token_ids
        requests["step"] = lm.backend.requests - before

    def on_server() -> None:
        before = lm.backend.requests
        made["server"] = generate_on_server(lm, STORY, max_new_tokens=args.tokens).token_ids
        requests["server"] = lm.backend.requests - before

    step_by_step()  # warm-ups
    on_server()
    step = timed(step_by_step, args.repeats, server_pid)
    server = timed(on_server, args.repeats, server_pid)
    for name, label, timing in (("step", "step-by-step", step), ("server", "server-side", server)):
        tokens = len(made[name])
        print(
            f"  {label:<12}  {1000 * timing.seconds / tokens:7.1f} ms/token  ({tokens} tokens, "
            f"{requests[name]} request{'s' * (requests[name] != 1)}){flag(timing)}",
            flush=True,
        )
    if len(made["server"]) != args.tokens:
        print(f"  (the server stopped after {len(made['server'])} tokens: a stop token)")
    same = made["step"][: len(made["server"])] == made["server"]
    per_token = (step.seconds / len(made["step"])) / (server.seconds / len(made["server"]))
    print(f"  step-by-step costs {per_token:.1f}x server-side per token; the same tokens: {'yes' if same else 'NO'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64, help="texts to score (64)")
    parser.add_argument("--concurrency", type=int, default=8, help="texts in flight at once, against one (8)")
    parser.add_argument("--tokens", type=int, default=32, help="greedy tokens per generation (32)")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs of each generation (3)")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for /api/info (300)")
    args = parser.parse_args()
    for name in ("prompts", "concurrency", "tokens", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a terminated run still stops its server
    try:
        with running_server([], args.startup_timeout) as (url, pid, info):
            lm = decodelab.load(url + "/v1")
            print(f"  {info['model']} on {lm.backend.capabilities.engine}, mode {lm.mode.label}", flush=True)
            measure_scoring(lm, url, args, pid)
            measure_steps(lm, args, pid)
    except BenchError as error:
        raise SystemExit(f"bench/remote.py: {error}") from None
    except decodelab.DecodelabError as error:
        raise SystemExit(f"bench/remote.py: {error}") from None
    except KeyboardInterrupt:
        raise SystemExit("bench/remote.py: interrupted (the server was stopped)") from None


if __name__ == "__main__":
    main()
