"""Tiny GPT: train the default configuration on the default corpus, report wall time, validation loss, a sample.

    python bench/tinygpt.py [--out DIR] [--steps N] [--threads N]

Trains `TinyGPTConfig()` with `TrainConfig()` (4 layers x 4 heads, width 128, context 128 bytes) on the
standard library's pydoc text, exactly as `decodelab tiny train --out DIR` does, then samples it through
decodelab's engine. Prints the wall time of the whole run, the throughput, the final validation loss over the
whole held-out tenth of the text in nats per character (and per byte, and bits per character) beside two
baselines (a uniform guess over the 256 bytes, and the corpus's own byte frequencies), and samples.
Target: under 5 minutes on a 2-core CPU, to samples visibly shaped like the corpus (words, punctuation).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections import Counter

# torch's CPU threads spin while they wait for work; on a machine that is also running something else that makes
# two threads ~10x slower than one (measured). Sleeping threads avoid that. It must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

import decodelab
from decodelab.tinygpt import TinyGPTConfig, TrainConfig, evaluate, read_corpus, train
from decodelab.tinygpt.corpus import character_count

TARGET_SECONDS = 300
PROMPTS = ("The ", "def ")


def uniform_nats_per_char(val_bytes: torch.Tensor) -> float:
    """Validation loss of a uniform guess over the 256 bytes: ln 256 nats per byte, so per character that times
    the bytes each character takes (more than 1 wherever the text is not ASCII)."""
    return math.log(256) * len(val_bytes) / character_count(val_bytes)


def unigram_nats_per_char(train_bytes: torch.Tensor, val_bytes: torch.Tensor) -> float:
    """Validation loss of predicting each byte from the training bytes' frequencies alone (no context)."""
    counts = Counter(train_bytes.tolist())
    total = sum(counts.values()) + 256  # add-one smoothing
    nats = -sum(math.log((counts[byte] + 1) / total) for byte in val_bytes.tolist())
    return nats / character_count(val_bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="checkpoint directory (default: a new temporary one, kept)")
    parser.add_argument("--steps", type=int, default=TrainConfig().steps)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or os.path.join(tempfile.mkdtemp(prefix="decodelab-tinygpt-"), "tiny")
    print(
        f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads "
        f"(OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}), load average {os.getloadavg()[0]:.2f}"
    )
    started = time.perf_counter()
    result = train(out, steps=args.steps)
    wall = time.perf_counter() - started

    train_bytes, val_bytes = read_corpus(None).split(TinyGPTConfig().block_size)
    lm = decodelab.load(out)
    per_byte, per_char = evaluate(lm.model, val_bytes, max_windows=None)  # every held-out window, not a sample
    print()
    print(
        f"wall time            {wall:.1f} s  (target < {TARGET_SECONDS} s: {'met' if wall < TARGET_SECONDS else 'MISSED'})"
    )
    print(f"throughput           {result.tokens_per_second:,.0f} tokens/s over {result.step} steps")
    print(
        f"validation loss      {per_char:.3f} nats/char  ({per_byte:.3f} nats/byte, {per_char / math.log(2):.3f} "
        f"bits/char) on all {len(val_bytes):,} held-out bytes"
    )
    print(
        f"  baselines          uniform over bytes {uniform_nats_per_char(val_bytes):.3f} (ln 256 = "
        f"{math.log(256):.3f} nats/byte), byte frequencies {unigram_nats_per_char(train_bytes, val_bytes):.3f} nats/char"
    )
    print(f"checkpoint           {out}")
    for prompt in PROMPTS:
        sample = lm.generate(prompt, temperature=0.8, seed=0, max_new_tokens=lm.context_length)
        print(f"\n--- sample: {prompt!r}, temperature 0.8, seed 0 ({sample.stop_reason})\n{prompt}{sample.text}")


if __name__ == "__main__":
    main()
