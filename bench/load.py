"""Cold and warm load time of the bundled model, as whole `decodelab next` processes.

Cold: a fresh, empty $DECODELAB_HOME, so the run includes the one-time GGUF conversion.
Warm: the same cache afterwards (median of several runs). Target: warm <= 3 s for the whole process.

    python bench/load.py [--warm-runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARM_TARGET_SECONDS = 3.0
COMMAND = [sys.executable, "-m", "decodelab", "next", "The capital of France is", "--top", "3"]


def timed_run(env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(COMMAND, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="decodelab-bench-") as home:
        env = {**os.environ, "DECODELAB_HOME": home}
        cold = timed_run(env)
        warm = [timed_run(env) for _ in range(args.warm_runs)]
    median = statistics.median(warm)
    print(f"cold (converts the GGUF): {cold:6.2f} s")
    print(f"warm, median of {len(warm)}:   {median:6.2f} s   (runs: {', '.join(f'{w:.2f}' for w in warm)})")
    print(f"cold / warm:              {cold / median:6.1f}x")
    print(
        f"warm / target {WARM_TARGET_SECONDS:.0f} s:        {median / WARM_TARGET_SECONDS:6.2f}  "
        f"({'meets' if median <= WARM_TARGET_SECONDS else 'MISSES'} the target)"
    )


if __name__ == "__main__":
    main()
