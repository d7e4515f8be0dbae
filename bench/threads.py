"""What OpenMP's wait policy does to decoding, idle and beside busy processes, measured in one run.

    python bench/threads.py [--tokens 32]

torch's CPU kernels run on OpenMP threads. Between parallel regions they wait for the next one, spinning
(OMP_WAIT_POLICY=ACTIVE) or sleeping (PASSIVE); libgomp's default spins for a while first. A decode step is
hundreds of short parallel regions, so how the threads wait decides how they share 2 cores with anything else.
Each row runs a fresh child process (the policy is read when the OpenMP runtime starts) that decodes
`--tokens` greedy tokens of the bundled model, median of `--repeats`, with 0, 1 or 2 busy-looping processes
beside it (a test suite, a compile, another decodelab).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

CHILD = """
import time, decodelab
lm = decodelab.load()
ids = lm.prompt_ids("Once upon a time, in a small village at the edge of a great forest, there lived")
lm.generate(ids, greedy=True, max_new_tokens=4, stop_token_ids=(), trace=False)
started = time.perf_counter()
lm.generate(ids, greedy=True, max_new_tokens={tokens}, stop_token_ids=(), trace=False)
print({tokens} / (time.perf_counter() - started))
"""
POLICIES = ("default", "ACTIVE", "PASSIVE")  # "default": OMP_WAIT_POLICY unset, libgomp's own choice


def decode_rate(policy: str, tokens: int) -> float:
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    env["DECODELAB_OMP_WAIT_POLICY"] = "keep"  # decodelab sets PASSIVE when unset: measure the raw runtime too
    if policy != "default":
        env["OMP_WAIT_POLICY"] = policy
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(tokens=tokens)], env=env, capture_output=True, text=True, check=True
    )
    return float(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates: dict[tuple[int, str], float] = {}
    for busy in (0, 1, 2):
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(0.5)
            samples: dict[str, list[float]] = {policy: [] for policy in POLICIES}
            for _ in range(args.repeats):  # interleaved, so noise hits every policy alike
                for policy in POLICIES:
                    samples[policy].append(decode_rate(policy, args.tokens))
            for policy in POLICIES:
                rates[busy, policy] = statistics.median(samples[policy])
        finally:
            for hog in hogs:
                hog.kill()
    print(f"greedy decode of the bundled model, {args.tokens} tokens, median of {args.repeats}, tokens/s")
    print(f"  {'busy processes beside it':<26}" + "".join(f"{policy:>10}" for policy in POLICIES))
    for busy in (0, 1, 2):
        print(f"  {busy:<26}" + "".join(f"{rates[busy, policy]:10.1f}" for policy in POLICIES))
    for busy in (0, 1, 2):
        ratio = rates[busy, "PASSIVE"] / rates[busy, "ACTIVE"]
        print(f"PASSIVE / ACTIVE with {busy} busy: {ratio:.2f}x")


if __name__ == "__main__":
    main()
