"""Peak memory of a prefill on the bundled model, measured in one run: one whole forward that keeps every
position's logits (how decodelab prefilled before) against `DecodeState`'s chunked, last-position-only prefill.

    python bench/memory.py [--lengths 1000,3000,6000] [--rows 16]

Each figure is the peak resident memory above what the process held just before (VmHWM reset, freed heap handed
back first), measured in a fresh process per case, in MiB. The KV cache is what any prefill must keep; the
rest is working memory. Linux only (reads /proc/self/status).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CASE = """
import ctypes, json, sys
import torch
import decodelab
from decodelab.decoding import DecodeState

def status_kb(field):
    return int(next(line for line in open("/proc/self/status") if line.startswith(field + ":")).split()[1])

mode, length, rows = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = decodelab.load()
ids = (lm.tokenizer.encode("The river rose and the village moved uphill. " * 1000))[:length]
DecodeState(lm.backend, ids[:32])  # warm-up: stacked weights, lazy imports
ctypes.CDLL("libc.so.6").malloc_trim(0)
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
before = status_kb("VmRSS")
if mode == "whole":
    cache = lm.backend.new_cache(rows)
    logits = lm.backend.forward(torch.tensor([ids] * rows), cache)[:, -1]  # (B, T, V) computed, last row kept
else:
    state = DecodeState(lm.backend, ids, rows=rows)
print(json.dumps({"peak_mib": (status_kb("VmHWM") - before) / 1024}))
"""


def peak_mib(mode: str, length: int, rows: int) -> float:
    run = subprocess.run(
        [sys.executable, "-c", CASE, mode, str(length), str(rows)], capture_output=True, text=True, check=True
    )
    return json.loads(run.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="1000,3000,6000", help="prompt lengths in tokens")
    parser.add_argument("--rows", type=int, default=16, help="rows of the batched case (1000 tokens each)")
    args = parser.parse_args()

    import decodelab
    from decodelab.server.limits import kv_bytes_per_token

    lm = decodelab.load()
    per_token = kv_bytes_per_token(lm.backend)
    cases = [(int(length), 1) for length in args.lengths.split(",")] + [(1000, args.rows)]
    print(f"{'prompt':>14} {'KV cache':>9} {'whole forward':>14} {'chunked':>9} {'ratio':>6}   (peak MiB)")
    for length, rows in cases:
        whole, chunked = peak_mib("whole", length, rows), peak_mib("chunked", length, rows)
        label = f"{rows} x {length}" if rows > 1 else f"{length}"
        print(
            f"{label:>14} {rows * length * per_token / 2**20:9.0f} {whole:14.0f} {chunked:9.0f} {whole / chunked:5.1f}x"
        )


if __name__ == "__main__":
    main()
