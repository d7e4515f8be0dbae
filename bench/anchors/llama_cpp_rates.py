"""llama.cpp's greedy decode and prefill rates on a GGUF, as one JSON line: the anchor bench/decode.py compares with.

Runs under the bench venv (`make bench-anchors`), which has llama-cpp-python and no torch; imports only
`llama_cpp` and the standard library. (Not named `llama_cpp.py`: run as a script, this directory comes first on
sys.path, and the file would import itself instead of the package.)

    .venv-anchors/bin/python bench/anchors/llama_cpp_rates.py --gguf MODEL.gguf --prompt-ids '[1, 2, 3]' \\
        --new-tokens 64 --prefill-tokens 512 --threads 2 --repeats 3

Each repeat starts from an empty KV cache (`reset()`; the next `eval` drops every cached position):
- generate: eval the prompt ids, take the greedy token, then `--new-tokens - 1` steps of eval-one-token + greedy
  pick; stop tokens are never looked at, so every run makes exactly `--new-tokens` tokens (checked). The pick is
  llama.cpp's own greedy sampler (argmax in C), as `llama-cli --temp 0` does.
  decode_tokens_per_s   = (new tokens - 1) / time of the one-token steps (llama-bench's "tg" rate);
  generate_tokens_per_s = new tokens / time of the whole call, prompt included (what bench/decode.py times for
                          decodelab's `generate` rows).
- prefill: eval of `--prefill-tokens` ids in one batch (the prompt ids repeated to that length);
  prefill_tokens_per_s = prefill tokens / time.
Each rate is the median over `--repeats`, after one untimed warm-up of each kind.

others_cpu_share: the share of all cores that other processes kept busy meanwhile (Linux; null elsewhere).
llama.cpp's threads wait for each other by spinning, so with 2 threads on a 2-core machine a neighbour taking
even half a core can cut the decode rate ten-fold (measured here: 1.8 to 60 tokens/s); trust a figure taken
with a share near 0.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from itertools import cycle, islice
from pathlib import Path

import llama_cpp


def read_ids(text: str) -> list[int]:
    """A JSON list of token ids, given inline or as the path of a file holding one."""
    source = text if text.lstrip().startswith("[") else Path(text).read_text()
    ids = json.loads(source)
    if not (isinstance(ids, list) and ids and all(isinstance(i, int) for i in ids)):
        raise SystemExit(f"--prompt-ids must be a non-empty JSON list of token ids, got {text[:60]!r}")
    return ids


def cpu_seconds() -> tuple[float, float] | None:
    """CPU seconds spent so far by all processes (busy, from /proc/stat) and by this one; None off Linux."""
    try:
        fields = [int(field) for field in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    own = resource.getrusage(resource.RUSAGE_SELF)
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK"), own.ru_utime + own.ru_stime


def others_share(before: tuple[float, float] | None, seconds: float) -> float | None:
    """The share of all cores other processes used during the `seconds` since `before`."""
    after = cpu_seconds()
    if before is None or after is None:
        return None
    others = (after[0] - before[0]) - (after[1] - before[1])
    return round(max(others, 0.0) / (seconds * (os.cpu_count() or 1)), 3)


class GreedyRunner:
    """One llama.cpp context on the model, with a greedy sampler, that times prompt + decode and prefill runs."""

    def __init__(self, gguf: Path, context: int, batch: int, threads: int):
        self.llm = llama_cpp.Llama(
            model_path=str(gguf),
            n_ctx=context,
            n_batch=batch,
            n_ubatch=batch,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.sampler = llama_cpp.llama_sampler_init_greedy()

    def greedy_token(self) -> int:
        """The argmax of the last evaluated position's logits."""
        return llama_cpp.llama_sampler_sample(self.sampler, self.llm.ctx, -1)

    def generate(self, prompt_ids: list[int], new_tokens: int) -> tuple[float, float]:
        """Seconds for the whole greedy run and for its one-token steps alone."""
        self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(prompt_ids)
        tokens = [self.greedy_token()]
        decoding = time.perf_counter()
        while len(tokens) < new_tokens:
            self.llm.eval([tokens[-1]])
            tokens.append(self.greedy_token())
        finished = time.perf_counter()
        evaluated = len(prompt_ids) + new_tokens - 1
        if len(tokens) != new_tokens or self.llm.n_tokens != evaluated:
            raise RuntimeError(f"made {len(tokens)} tokens ({self.llm.n_tokens} evaluated), expected {new_tokens}")
        return finished - started, finished - decoding

    def prefill(self, ids: list[int]) -> float:
        """Seconds to evaluate `ids` from an empty cache."""
        self.llm.reset()
        started = time.perf_counter()
        self.llm.eval(ids)
        return time.perf_counter() - started

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.sampler)
        self.llm.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, required=True)
    parser.add_argument("--prompt-ids", required=True, help="JSON list of token ids, or a file holding one")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prefill-tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    prompt_ids = read_ids(args.prompt_ids)
    if args.new_tokens < 2:
        raise SystemExit(f"--new-tokens must be at least 2 (one prompt step, one decode step), got {args.new_tokens}")
    prefill_ids = list(islice(cycle(prompt_ids), args.prefill_tokens))
    context = max(len(prompt_ids) + args.new_tokens, args.prefill_tokens)
    runner = GreedyRunner(args.gguf, context, batch=max(args.prefill_tokens, len(prompt_ids)), threads=args.threads)
    try:
        runner.generate(prompt_ids, args.new_tokens)  # warm-up: pages the weights in, sizes the buffers
        runner.prefill(prefill_ids)
        started, cpu_before = time.perf_counter(), cpu_seconds()
        runs = [runner.generate(prompt_ids, args.new_tokens) for _ in range(args.repeats)]
        prefills = [runner.prefill(prefill_ids) for _ in range(args.repeats)]
        busy_neighbours = others_share(cpu_before, time.perf_counter() - started)
    finally:
        runner.close()
    whole = statistics.median(run[0] for run in runs)
    decoding = statistics.median(run[1] for run in runs)
    result = {
        "decode_tokens_per_s": (args.new_tokens - 1) / decoding,
        "prefill_tokens_per_s": args.prefill_tokens / statistics.median(prefills),
        "generate_tokens_per_s": args.new_tokens / whole,
        "threads": args.threads,
        "llama_cpp_version": llama_cpp.__version__,
        "prompt_tokens": len(prompt_ids),
        "new_tokens": args.new_tokens,
        "prefill_tokens": args.prefill_tokens,
        "repeats": args.repeats,
        "others_cpu_share": busy_neighbours,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
