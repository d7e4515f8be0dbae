"""What each sampler stage costs per token, next to one decode forward of the bundled model, in one run.

    python bench/samplers.py [--context 512] [--repeats 50]

Every registered stage runs alone on (1, V) logits with a history of `--context` tokens (its settings at a
typical value below); the table gives milliseconds per call and the ratio to one cached decode forward, so a
stage that costs a visible share of a token shows. New stages appear here without a change to this script
(a stage with no typical value below runs with its first slider's high end).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import decodelab
from decodelab.decoding import DecodeState, draw_seed
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import STAGES

TYPICAL = {  # stage -> settings a user would try
    "logit_bias": {"ban": (13, 42)},
    "repetition_penalty": {"repetition_penalty": 1.2},
    "presence_penalty": {"presence_penalty": 0.5},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "no_repeat_ngram": {"no_repeat_ngram_size": 3},
    "dry": {"dry_multiplier": 0.8},
    "temperature": {"temperature": 0.7},
    "top_n_sigma": {"top_n_sigma": 1.0},
    "top_k": {"top_k": 40},
    "top_p": {"top_p": 0.9},
    "min_p": {"min_p": 0.05},
    "typical_p": {"typical_p": 0.9},
    "epsilon_cutoff": {"epsilon_cutoff": 3e-4},
    "eta_cutoff": {"eta_cutoff": 3e-4},
    "xtc": {"xtc_probability": 1.0, "xtc_threshold": 0.1},
    "mirostat_v2": {"mirostat_tau": 5.0},
}


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--context", type=int, default=512, help="tokens of history the stages see (512)")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    torch.manual_seed(0)
    lm = decodelab.load()
    ids = torch.randint(0, lm.backend.vocab_size, (args.context,)).tolist()
    state = DecodeState(lm.backend, ids, vocabulary=lm.tokenizer.texts)
    history = state.seeded_history([draw_seed(0, 0)])
    logits = state.logits  # (1, V)
    token = logits.argmax(dim=-1)

    running = state.fork()  # a copy that grows one token per call; the stages read the original's history

    def forward() -> None:
        running.advance(token)

    forward_ms = median_ms(forward, max(5, args.repeats // 5))
    print(
        f"bundled {lm.name}: V = {logits.shape[-1]}, history {args.context} tokens, "
        f"one decode forward {forward_ms:.2f} ms (median of {max(5, args.repeats // 5)})"
    )
    print(f"{'stage':<20}{'settings':<44}{'ms/call':>9}{'x forward':>11}")
    for name, stage in STAGES.items():
        first = stage.settings[0]
        settings = TYPICAL.get(name, {first.name: first.slider[1] if first.slider else 1})
        chain = GenerationConfig(**settings).chain()
        chain(logits, history)  # warm up (DRY reads the vocabulary once)
        ms = median_ms(lambda chain=chain: chain(logits, history), args.repeats)
        shown = ", ".join(f"{key}={value}" for key, value in settings.items())
        print(f"{name:<20}{shown:<44}{ms:>9.3f}{ms / forward_ms:>10.2f}x")


if __name__ == "__main__":
    main()
