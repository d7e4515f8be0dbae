"""llama.cpp's decode and prefill rates for bench/decode.py, measured in a separate process (standard library only).

llama-cpp-python lives in its own venv, `.venv-anchors` (`make bench-anchors` builds it for this CPU), so the
measurement runs `llama_cpp_rates.py` there; a `llama_cpp` importable in this interpreter is the fallback. It
runs with the OpenMP runtime's default wait policy, not the PASSIVE one decodelab sets for torch.

    sys.path.insert(0, str(Path(__file__).parent / "anchors"))
    from run import NOT_INSTALLED, llama_cpp_rates

    rates = llama_cpp_rates(gguf, prompt_ids, new_tokens=64, prefill_tokens=512, repeats=3, threads=2)
    print(NOT_INSTALLED if rates is None else f"llama.cpp: {rates['decode_tokens_per_s']:.1f} tokens/s")
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ANCHORS = Path(__file__).resolve().parent
ANCHORS_PYTHON = ANCHORS.parents[1] / ".venv-anchors" / "bin" / "python"  # made by `make bench-anchors`
RATES_SCRIPT = ANCHORS / "llama_cpp_rates.py"
NOT_INSTALLED = "llama.cpp: not installed, run `make bench-anchors`"
TIMEOUT_SECONDS = 900  # a busy 2-core machine can slow llama.cpp's threads ten-fold; past this, give up


def llama_cpp_python() -> str | None:
    """The interpreter that has `llama_cpp`: the bench venv's, else this one's, else None."""
    if ANCHORS_PYTHON.is_file():
        return str(ANCHORS_PYTHON)
    if importlib.util.find_spec("llama_cpp") is not None:
        return sys.executable
    return None


def llama_cpp_rates(
    gguf: Path, prompt_ids: list[int], new_tokens: int, prefill_tokens: int = 512, repeats: int = 3, threads: int = 2
) -> dict | None:
    """llama.cpp's rates on `gguf` as `llama_cpp_rates.py` prints them (decode_tokens_per_s, prefill_tokens_per_s,
    generate_tokens_per_s, threads, llama_cpp_version, others_cpu_share, ...); None when llama.cpp is not installed
    or the run failed (the reason, one line, on stderr). An others_cpu_share well above 0 means a busy machine:
    llama.cpp's 2-thread rates are then unreliable (see llama_cpp_rates.py)."""
    python = llama_cpp_python()
    if python is None:
        return None
    command = [
        python,
        str(RATES_SCRIPT),
        f"--gguf={gguf}",
        f"--prompt-ids={json.dumps(prompt_ids)}",
        f"--new-tokens={new_tokens}",
        f"--prefill-tokens={prefill_tokens}",
        f"--repeats={repeats}",
        f"--threads={threads}",
    ]
    # llama.cpp as it ships: importing decodelab sets OMP_WAIT_POLICY=PASSIVE, which costs llama.cpp's decode ~35%
    # (45 against 70 tokens/s, measured idle) while its prefill stays the same.
    env = {name: value for name, value in os.environ.items() if name != "OMP_WAIT_POLICY"}
    try:
        run = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_SECONDS, env=env)
    except subprocess.TimeoutExpired:
        return _failed(f"no answer within {TIMEOUT_SECONDS} s")
    if run.returncode < 0:  # killed by a signal: SIGILL or SIGSEGV mean a build for another CPU
        try:
            name = signal.Signals(-run.returncode).name
        except ValueError:
            name = f"signal {-run.returncode}"
        return _failed(f"killed by {name} (built for another CPU? `rm -r .venv-anchors && make bench-anchors`)")
    if run.returncode != 0:
        lines = run.stderr.strip().splitlines()
        return _failed(lines[-1] if lines else f"exit status {run.returncode}")
    try:
        return json.loads(run.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        return _failed(f"no JSON line in its output: {run.stdout.strip()[-200:]!r}")


def _failed(reason: str) -> None:
    print(f"llama.cpp: measurement failed: {reason}", file=sys.stderr)
    return None
