"""Load time and memory of the bundled model, as whole `decodelab next` processes.

Time. Cold: a fresh, empty $DECODELAB_HOME, so the run includes the one-time GGUF conversion. Warm: the same
cache afterwards (median of several runs). Target: warm <= 3 s for the whole process.

Memory. The peak resident memory (ru_maxrss, median of runs) of a warm `decodelab next` in each mode: float32
(the default), `--dtype bfloat16`, `--quantize int8`, `--quantize int4`, against the float32 weights' size. Then
where each mode's memory goes: the same command run in-process with the resident memory read after each stage,
split into anonymous memory (heap: tensors, tokenizer) and mapped files (shared libraries, and model.safetensors,
which safetensors maps: a weight still read from the file counts as resident file pages once touched). Linux only.

    python bench/load.py [--warm-runs 5] [--memory-runs 3] [--only time|memory]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

WARM_TARGET_SECONDS = 3.0
PROMPT = "The capital of France is"
COMMAND = [sys.executable, "-m", "decodelab", "next", PROMPT, "--top", "3"]
WEIGHTS_STAGE = "weights (NativeLlama.from_directory)"
# mode -> its `decodelab next` flags
MODES = {
    "float32": [],
    "bfloat16": ["--dtype", "bfloat16"],
    "int8": ["--quantize", "int8"],
    "int4": ["--quantize", "int4"],
}

# `decodelab next` run in-process, reading /proc/self/status after each stage: the stages are marked by wrapping
# NativeLlama.from_directory, Tokenizer.from_directory and decodelab.load (which also takes a mode's options the
# CLI has no flag for yet). Prints one JSON object.
STAGES = r"""
import json, sys
def status():
    fields = {}
    for line in open("/proc/self/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0]) / 1024  # MiB
    return fields
stages = [("python", status())]
import torch
stages.append(("import torch", status()))
import decodelab.cli, decodelab.loading
from decodelab.backends.llama import NativeLlama
from decodelab.tokenizer import Tokenizer
stages.append(("import decodelab", status()))
models = []
def wrapped(owner, name, label, keep=False):
    original = getattr(owner, name)
    def call(*args, **kwargs):
        stages.append((f"{label}: before", status()))
        result = original(*args, **kwargs)
        stages.append((label, status()))
        if keep:
            models.append(result)
        return result
    setattr(owner, name, call)
wrapped(NativeLlama, "from_directory", sys.argv[4], keep=True)
wrapped(Tokenizer, "from_directory", "tokenizer")
flags, api_options = json.loads(sys.argv[1]), json.loads(sys.argv[2])
load = decodelab.loading.load
def load_in_mode(name=None, **options):
    lm = load(name, **{**options, **api_options})
    stages.append(("load() done (quantized, if asked)", status()))
    return lm
decodelab.loading.load = load_in_mode
decodelab.cli.main(["next", sys.argv[3], "--top", "3", *flags])
stages.append(("after `next` (forward, printing)", status()))

def safetensors_mappings():
    ranges, mapped, resident = [], 0, 0
    current = None
    for line in open("/proc/self/smaps"):
        head = line.split()
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            current = head[-1].endswith("model.safetensors") if len(head) >= 6 else False
            if current:
                start, end = (int(part, 16) for part in head[0].split("-"))
                ranges.append((start, end))
        elif current and head[0] in ("Size:", "Rss:"):
            kib = int(head[1])
            mapped, resident = (mapped + kib, resident) if head[0] == "Size:" else (mapped, resident + kib)
    return ranges, mapped / 1024, resident / 1024

ranges, mapped, resident = safetensors_mappings()
storages = {}
for model in models:
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
in_file = [n for ptr, n in storages.items() if any(a <= ptr < b for a, b in ranges)]
print(json.dumps({
    "stages": stages, "model_mib": sum(storages.values()) / 2**20,
    "model_in_file_mib": sum(in_file) / 2**20, "model_in_file_tensors": len(in_file),
    "safetensors_mapped_mib": mapped, "safetensors_resident_mib": resident,
}))
"""


def timed_run(env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(COMMAND, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def report_times(warm_runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="decodelab-bench-") as home:
        env = {**os.environ, "DECODELAB_HOME": home}
        cold = timed_run(env)
        warm = [timed_run(env) for _ in range(warm_runs)]
    median = statistics.median(warm)
    print(f"cold (converts the GGUF): {cold:6.2f} s")
    print(f"warm, median of {len(warm)}:   {median:6.2f} s   (runs: {', '.join(f'{w:.2f}' for w in warm)})")
    print(f"cold / warm:              {cold / median:6.1f}x")
    print(
        f"warm / target {WARM_TARGET_SECONDS:.0f} s:        {median / WARM_TARGET_SECONDS:6.2f}  "
        f"({'meets' if median <= WARM_TARGET_SECONDS else 'MISSES'} the target)"
    )


def peak_rss_mib(command: list[str]) -> float:
    """ru_maxrss of one run of `command`, a child of its own (os.wait4 reports that child alone)."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    errors = child.stderr.read() if child.stderr else b""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{' '.join(command[2:])} failed: {errors.decode(errors='replace').strip()[-300:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def split_flags(flags: list[str], help_text: str) -> tuple[list[str], dict]:
    """The flags `decodelab next` has, and the rest as decodelab.load() keywords (`--dtype X` -> dtype=X)."""
    cli, api = [], {}
    for flag, value in zip(flags[::2], flags[1::2]):
        if flag in help_text:
            cli += [flag, value]
        else:
            api[flag.removeprefix("--")] = value
    return cli, api


def stage_breakdown(flags: list[str], api_options: dict) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", STAGES, json.dumps(flags), json.dumps(api_options), PROMPT, WEIGHTS_STAGE],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(run.stdout.strip().splitlines()[-1])


def weights_mib() -> float:
    """float32 bytes of the bundled model's weights, from its converted model.safetensors header."""
    import struct

    from decodelab.gguf_cache import bundled_gguf_path, ensure_converted

    path = ensure_converted(bundled_gguf_path()) / "model.safetensors"
    with open(path, "rb") as file:
        header = json.loads(file.read(struct.unpack("<Q", file.read(8))[0]))
    offsets = [entry["data_offsets"] for name, entry in header.items() if name != "__metadata__"]
    return sum(end - start for start, end in offsets) / 2**20


def report_memory(runs: int) -> None:
    subprocess.run(COMMAND, check=True, capture_output=True)  # warm: converts into $DECODELAB_HOME if needed
    weights = weights_mib()
    help_text = subprocess.run([*COMMAND[:4], "--help"], check=True, capture_output=True, text=True).stdout
    peaks, breakdowns = {}, {}
    for mode, flags in MODES.items():
        cli, api = split_flags(flags, help_text)
        breakdowns[mode] = stage_breakdown(cli, api)
        if api:  # the CLI lacks a flag: the in-process runs' own peaks (same command, load() told the mode)
            values = [breakdowns[mode]["stages"][-1][1]["VmHWM"]]
            values += [stage_breakdown(cli, api)["stages"][-1][1]["VmHWM"] for _ in range(runs - 1)]
            peaks[mode] = (values, f"decodelab.load({_keywords(api)})")
        else:
            peaks[mode] = ([peak_rss_mib([*COMMAND, *cli]) for _ in range(runs)], " ".join(["decodelab next", *cli]))

    print(f"\npeak RSS of a warm `decodelab next`, median of {runs} (MiB; the float32 weights are {weights:.0f} MiB)")
    for mode, (values, how) in peaks.items():
        peak = statistics.median(values)
        spread = f"{min(values):.0f}-{max(values):.0f}"
        print(f"  {mode:<9} {peak:7.0f}   {peak / weights:4.2f}x the float32 weights   runs {spread:<10} ({how})")

    print("\nRSS after each stage (MiB), anonymous + mapped files (shared libraries, model.safetensors)")
    report_breakdown(breakdowns)


def report_breakdown(breakdowns: dict) -> None:
    _row("stage", list(breakdowns))
    labels = [label for label, _ in breakdowns["float32"]["stages"] if not label.endswith(": before")]
    for label in labels:
        cells = []
        for breakdown in breakdowns.values():
            fields = dict(breakdown["stages"]).get(label)
            cells.append(f"{fields['VmRSS']:.0f} = {fields['RssAnon']:.0f} + {fields['RssFile']:.0f}" if fields else "")
        _row(label, cells)
    done = list(breakdowns.values())
    _row("peak (VmHWM)", [f"{b['stages'][-1][1]['VmHWM']:.0f}" for b in done])
    _row("weights stage: peak above its start", [f"{_stage_cost(b['stages'], WEIGHTS_STAGE):.0f}" for b in done])
    _row("model tensors held", [f"{b['model_mib']:.0f}" for b in done])
    _row(
        "  of which views of model.safetensors",
        [f"{b['model_in_file_mib']:.1f} ({b['model_in_file_tensors']})" for b in done],
    )
    _row("model.safetensors mapped", [f"{b['safetensors_mapped_mib']:.0f}" for b in done])
    _row("  of which resident", [f"{b['safetensors_resident_mib']:.0f}" for b in done])
    dead = [b["safetensors_resident_mib"] - b["model_in_file_mib"] for b in done]
    _row("  resident, read by no tensor", [f"{mib:.0f}" for mib in dead])


def _row(title: str, cells: list[str]) -> None:
    print(f"  {title:<38}" + "".join(f"{cell:>20}" for cell in cells))


def _stage_cost(stages: list, label: str) -> float:
    """How far the peak rose during the stage `label` (MiB): its end's VmHWM minus its start's VmRSS."""
    named = dict(stages)
    return named[label]["VmHWM"] - named[f"{label}: before"]["VmRSS"]


def _keywords(options: dict) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in options.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--memory-runs", type=int, default=3, help="runs per mode for the peak RSS (median)")
    parser.add_argument("--only", choices=("time", "memory"), help="one of the two reports (default: both)")
    args = parser.parse_args()
    if args.only != "memory":
        report_times(args.warm_runs)
    if args.only != "time":
        report_memory(args.memory_runs)


if __name__ == "__main__":
    main()
