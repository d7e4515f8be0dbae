"""Decoding speed on the bundled model, measured in one run: tokens/s and the ratios that matter.

    python bench/decode.py [--tokens 64] [--repeats 3]

Rows (greedy, same prompt, same number of new tokens, stop tokens off so every run makes `--tokens`):
  traced      decodelab's loop with full trace (top-5 raw and post-chain, per-stage reports), native forward
  untraced    the same loop with trace=False
  traced/hf   decodelab's loop with full trace on the transformers backend (same forward as generate)
  generate    transformers `model.generate(do_sample=False)`
  no-cache    the tutorial's loop: full forward over the whole sequence each step, argmax, no KV cache
Each figure is the median of `--repeats` runs, interleaved so machine noise hits all rows alike.
Targets: traced >= 1.0x generate; trace overhead (1 - traced/untraced) <= 10 %.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import decodelab

PROMPT = "Once upon a time, in a small village at the edge of a great forest, there lived"


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = decodelab.load()
    hf_lm = decodelab.load(lm.path, backend="transformers")
    hf_model = hf_lm.model
    ids = lm.prompt_ids(PROMPT)
    n = args.tokens
    options = dict(greedy=True, max_new_tokens=n, stop_token_ids=())

    def no_cache_loop():
        sequence = torch.tensor([ids])
        with torch.no_grad():
            for _ in range(n):
                next_id = hf_model(sequence).logits[0, -1].argmax()
                sequence = torch.cat([sequence, next_id.view(1, 1)], dim=1)

    def generate():
        with torch.no_grad():
            hf_model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
            )

    runs = {
        "traced": lambda: lm.generate(ids, **options),
        "untraced": lambda: lm.generate(ids, trace=False, **options),
        "traced/hf": lambda: hf_lm.generate(ids, **options),
        "generate": generate,
        "no-cache": no_cache_loop,
    }
    for run in runs.values():  # warm-up: first calls allocate and pick kernels
        run()
    seconds = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            seconds[name].append(timed(run))
    rate = {name: n / statistics.median(times) for name, times in seconds.items()}
    print(
        f"bundled {lm.name}, prompt {len(ids)} tokens, {n} new tokens, median of {args.repeats}, "
        f"{torch.get_num_threads()} threads"
    )
    for name in runs:
        print(f"  {name:<10} {rate[name]:8.1f} tokens/s")
    overhead = 1 - rate["traced"] / rate["untraced"]
    print(f"traced / generate:        {rate['traced'] / rate['generate']:.2f}x   (target >= 1.0)")
    print(f"traced/hf / generate:     {rate['traced/hf'] / rate['generate']:.2f}x   (same forward as generate)")
    print(f"trace overhead:           {overhead:+.1%}   (target <= 10%)")
    print(f"traced / no-cache loop:   {rate['traced'] / rate['no-cache']:.2f}x")


if __name__ == "__main__":
    main()
