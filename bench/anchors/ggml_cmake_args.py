"""Print the CMAKE_ARGS that build llama.cpp (llama-cpp-python) for this CPU's instruction sets.

llama-cpp-python's default build compiles with -march=native and, on some CPUs with AMX, segfaults at load;
a build with GGML_NATIVE=OFF and the SIMD options turned on one by one works. Which options to turn on
depends on the CPU: an AVX-512 build on a CPU without AVX-512 dies with SIGILL. So the options are read off
/proc/cpuinfo's flags, and AMX is always left off (GGML_AMX_* default to OFF once GGML_NATIVE is OFF).

    CMAKE_ARGS="$(python bench/anchors/ggml_cmake_args.py)" pip install llama-cpp-python==0.3.36
"""

from __future__ import annotations

from pathlib import Path

# GGML option -> the /proc/cpuinfo flags it needs (all of them)
GGML_OPTIONS = {
    "GGML_AVX": {"avx"},
    "GGML_AVX2": {"avx2"},
    "GGML_FMA": {"fma"},
    "GGML_F16C": {"f16c"},
    "GGML_BMI2": {"bmi2"},
    "GGML_AVX_VNNI": {"avx_vnni"},
    "GGML_AVX512": {"avx512f", "avx512bw", "avx512dq", "avx512vl"},
    "GGML_AVX512_VBMI": {"avx512_vbmi"},
    "GGML_AVX512_VNNI": {"avx512_vnni"},
    "GGML_AVX512_BF16": {"avx512_bf16"},
}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cmake_args(flags: set[str]) -> str:
    options = [f"-D{name}={'ON' if needed <= flags else 'OFF'}" for name, needed in GGML_OPTIONS.items()]
    return " ".join(["-DGGML_NATIVE=OFF", *options])


if __name__ == "__main__":
    print(cmake_args(cpu_flags()))
