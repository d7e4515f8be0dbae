"""Decoding speed and fidelity of every mode on the bundled model, measured in one run, with the ratios that matter.

    python bench/decode.py [--tokens 64] [--repeats 3] [--no-compile] [--no-fidelity] [--no-llama-cpp]

Decode rows (greedy, one prompt, `--tokens` new tokens, stop tokens off so every run makes them all):
  exact            decodelab's loop with full trace (top-5 raw and post-chain, per-stage reports), float32, eager
  exact untraced   the same loop with trace=False
  <mode>           the traced loop in each fast mode: bfloat16; int8 / int4 weights; each also compiled
  generate fp32    transformers `model.generate(do_sample=False)`, float32
  generate bf16    the same in bfloat16
  llama.cpp        llama-cpp-python on the bundled GGUF (its own Q4_1 weights), when `make bench-anchors` built it
Prefill rows: one forward over a 512-token prompt (decodelab: last position's logits only).
Batch rows: sampling n=8 rows in one call against n=1, tokens per second.
Fidelity: each mode against the exact path on 4 prompts x 50 teacher-forced steps (decodelab.fidelity).
Figures are medians of `--repeats` runs, interleaved so machine noise hits all rows alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import decodelab
from decodelab.decoding import prefill
from decodelab.fidelity import FidelityReference
from decodelab.gguf_cache import bundled_gguf_path

sys.path.insert(0, str(Path(__file__).parent / "anchors"))
from run import NOT_INSTALLED, llama_cpp_rates

PROMPT = "Once upon a time, in a small village at the edge of a great forest, there lived"
PREFILL_TOKENS = 512
BATCH_ROWS = 8
# label -> decodelab.load options; the compiled twins are added unless --no-compile
MODES = {
    "bfloat16": dict(dtype="bfloat16"),
    "int8": dict(quantize="int8"),
    "int4": dict(quantize="int4"),
    "bfloat16+int4": dict(dtype="bfloat16", quantize="int4"),
}


def median_rates(runs: dict[str, tuple[Callable[[], object], int]], repeats: int) -> dict[str, float]:
    """name -> (work, items it makes) => name -> items per second, median of `repeats` interleaved runs."""
    for work, _ in runs.values():  # warm-up: first calls allocate and pick kernels
        work()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (work, _) in runs.items():
            started = time.perf_counter()
            work()
            seconds[name].append(time.perf_counter() - started)
    return {name: runs[name][1] / statistics.median(times) for name, times in seconds.items()}


def load_modes(compile: bool) -> dict[str, decodelab.LM]:
    models = {"exact": decodelab.load()}
    for label, options in MODES.items():
        models[label] = decodelab.load(**options)
    if compile:
        for label, options in [("float32", {}), *MODES.items()]:
            lm = decodelab.load(**options, compile=True)
            models[f"{label} compiled"] = lm
            print(f"  compiled {label}: warm-up {lm.compile_seconds:.1f} s", flush=True)
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled modes (their warm-up)")
    parser.add_argument("--no-fidelity", action="store_true", help="skip the fidelity table")
    parser.add_argument("--no-llama-cpp", action="store_true", help="skip llama.cpp even when installed")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"loading modes ({torch.get_num_threads()} threads)", flush=True)
    models = load_modes(not args.no_compile)
    exact = models["exact"]
    hf = {
        dtype: decodelab.load(exact.path, backend="transformers", dtype=dtype).model
        for dtype in ("float32", "bfloat16")
    }
    ids = exact.prompt_ids(PROMPT)
    n = args.tokens
    greedy = dict(greedy=True, max_new_tokens=n, stop_token_ids=())

    def generate(model) -> Callable[[], object]:
        prompt = torch.tensor([ids])
        options = dict(do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0)
        return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), **options)

    decode: dict[str, tuple[Callable[[], object], int]] = {
        label: ((lambda lm=lm: lm.generate(ids, **greedy)), n) for label, lm in models.items()
    }
    decode["exact untraced"] = (lambda: exact.generate(ids, trace=False, **greedy), n)
    decode["generate fp32"] = (generate(hf["float32"]), n)
    decode["generate bf16"] = (generate(hf["bfloat16"]), n)
    print("measuring decode", flush=True)
    rate = median_rates(decode, args.repeats)

    long_ids = torch.randint(
        3, exact.backend.vocab_size, (1, PREFILL_TOKENS), generator=torch.Generator().manual_seed(0)
    )
    prefills: dict[str, tuple[Callable[[], object], int]] = {
        label: ((lambda lm=lm: prefill(lm.backend, long_ids, lm.backend.new_cache(1))), PREFILL_TOKENS)
        for label, lm in models.items()
        if not label.endswith("compiled")  # prefill is eager in every mode
    }
    for dtype, model in hf.items():
        prefills[f"transformers {dtype}"] = (lambda model=model: model(long_ids, logits_to_keep=1), PREFILL_TOKENS)
    print("measuring prefill", flush=True)
    prefill_rate = median_rates(prefills, args.repeats)

    best = max((label for label in models if label != "exact"), key=lambda label: rate[label])
    sampling = dict(max_new_tokens=n, temperature=0.8, top_p=0.95, stop_token_ids=(), trace=False)
    batches: dict[str, tuple[Callable[[], object], int]] = {}
    for label in ("exact", best):
        lm = models[label]
        batches[f"{label} n=1"] = (lambda lm=lm: lm.sample(ids, n=1, seed=0, **sampling), n)
        batches[f"{label} n={BATCH_ROWS}"] = (
            lambda lm=lm: lm.sample(ids, n=BATCH_ROWS, seed=0, **sampling),
            n * BATCH_ROWS,
        )
    print("measuring batches", flush=True)
    batch_rate = median_rates(batches, args.repeats)

    anchor = None
    if not args.no_llama_cpp:
        print("measuring llama.cpp", flush=True)
        anchor = llama_cpp_rates(
            bundled_gguf_path(),
            ids,
            new_tokens=n,
            prefill_tokens=PREFILL_TOKENS,
            repeats=args.repeats,
            threads=torch.get_num_threads(),
        )

    print(
        f"\nbundled {exact.name}, prompt {len(ids)} tokens, {n} new tokens, median of {args.repeats}, {torch.get_num_threads()} threads"
    )
    print("decode, tokens/s")
    for label in decode:
        print(f"  {label:<24} {rate[label]:8.1f}")
    if anchor:
        # Like decodelab's rows, llama.cpp's generate rate includes reading the prompt.
        print(f"  {'llama.cpp (Q4_1 GGUF)':<24} {anchor['generate_tokens_per_s']:8.1f}")
        busy = anchor.get("others_cpu_share", 0.0)
        if busy > 0.1:
            print(
                f"  (other processes kept {busy:.0%} of the cores busy while llama.cpp ran: its rates are unreliable)"
            )
    print(f"prefill of {PREFILL_TOKENS} tokens, tokens/s")
    for label in prefills:
        print(f"  {label:<24} {prefill_rate[label]:8.1f}")
    if anchor:
        print(f"  {'llama.cpp (Q4_1 GGUF)':<24} {anchor['prefill_tokens_per_s']:8.1f}")
    print(f"sampling n={BATCH_ROWS} against n=1, tokens/s")
    for label in batches:
        print(f"  {label:<24} {batch_rate[label]:8.1f}")

    print("\nratios")
    print(f"  exact traced / generate fp32:        {rate['exact'] / rate['generate fp32']:.2f}x  (goal >= 1.5)")
    print(f"  trace overhead (exact):              {1 - rate['exact'] / rate['exact untraced']:+.1%}")
    for label in models:
        if label != "exact":
            print(f"  {label + ' / generate bf16:':<37}{rate[label] / rate['generate bf16']:.2f}x")
    best_prefill = max((label for label in prefills if not label.startswith("transformers")), key=prefill_rate.get)
    for label in ("exact", best):
        ratio = batch_rate[f"{label} n={BATCH_ROWS}"] / batch_rate[f"{label} n=1"]
        print(f"  {label} n={BATCH_ROWS} / n=1:{'':<{22 - len(label)}}{ratio:.2f}x  (goal >= 4)")
    if anchor:
        print(f"  best decode ({best}) / llama.cpp: {rate[best] / anchor['generate_tokens_per_s']:.2f}x  (goal >= 1.0)")
        print(f"  exact / llama.cpp decode:            {rate['exact'] / anchor['generate_tokens_per_s']:.2f}x")
        ratio = prefill_rate[best_prefill] / anchor["prefill_tokens_per_s"]
        print(f"  best prefill ({best_prefill}) / llama.cpp: {ratio:.2f}x  (goal >= 8)")
    else:
        print(f"  {NOT_INSTALLED}")

    if not args.no_fidelity:
        print("\nfidelity against the exact path (4 prompts x 50 teacher-forced steps: English, Korean, code, chat)")
        reference = FidelityReference(exact)
        print(f"  {'mode':<24} {'top-1 agreement':>16} {'mean KL (nats)':>15} {'max |d logprob|':>16}")
        for label, lm in models.items():
            if label == "exact":
                continue
            fidelity = reference.compare(lm)
            print(
                f"  {label:<24} {fidelity.top1_agreement:16.1%} {fidelity.mean_kl:15.2e} {fidelity.max_logprob_delta:16.3f}"
            )


if __name__ == "__main__":
    main()
