"""`decodelab models`: the bundled model, decodelab's converted cache, and Hugging Face cached models, with the
backend each loads on and the compute modes a load may ask for (float32, the exact path, unless a fast mode is asked).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from decodelab.cli.options import add_json_option, print_json
from decodelab.errors import DecodelabError

NO_BACKEND = "-"  # not known until the model is first loaded (a .gguf not yet converted)
FAST_STEP_BACKEND = "native"  # the backend whose weights quantize and whose decode step compiles


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "models", help="list the bundled and cached models with their sizes, backends and the compute modes"
    )
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = list_models()
    if args.json:
        print_json({"models": rows, "modes": compute_modes()})
        return 0
    width = max([len(row["name"]) for row in rows] + [4])
    backend_width = max([len(row["backend"]) for row in rows] + [7])
    print(f"{'kind':<10}  {'name':<{width}}  {'size':>9}  {'backend':<{backend_width}}  path")
    for row in rows:
        print(
            f"{row['kind']:<10}  {row['name']:<{width}}  {human_size(row['bytes']):>9}  "
            f"{row['backend']:<{backend_width}}  {row['path']}"
        )
    print()
    print(modes_note(compute_modes()))
    return 0


def compute_modes() -> dict:
    """The mode every load runs in unless asked otherwise, and the choices of the flags that ask for a fast one."""
    from decodelab.backends.quantized import QUANTIZATIONS
    from decodelab.compute_mode import ComputeMode
    from decodelab.loading import DTYPES

    return {
        "default": ComputeMode(dtype="float32", quantization="none", compiled=False).to_dict(),  # load()'s defaults
        "dtype": list(DTYPES),
        "quantize": list(QUANTIZATIONS),
        "quantize_and_compile_backend": FAST_STEP_BACKEND,
    }


def modes_note(modes: dict) -> str:
    """'modes: float32 (the exact path) unless asked; fast modes: --dtype bfloat16|float16, ...'."""
    dtypes = "|".join(dtype for dtype in modes["dtype"] if dtype != modes["default"]["dtype"])
    quantize = "|".join(kind for kind in modes["quantize"] if kind != modes["default"]["quantization"])
    return (
        f"modes: every model loads in {modes['default']['label']} (the exact path) unless asked; fast modes: "
        f"--dtype {dtypes} (any backend), --quantize {quantize} and --compile "
        f"({modes['quantize_and_compile_backend']} backend only)"
    )


def list_models() -> list[dict]:
    """One row per model decodelab can load without a download: kind, name, bytes on disk, backend, path."""
    from decodelab.gguf_cache import BUNDLED_NAME, bundled_gguf_path, converted_dir_for, is_complete
    from decodelab.home import converted_models_dir

    rows = []
    try:
        gguf = bundled_gguf_path()
        converted = converted_dir_for(gguf)
        rows.append(_row("bundled", BUNDLED_NAME, gguf, _backend(converted) if is_complete(converted) else NO_BACKEND))
    except DecodelabError as missing:
        rows.append(
            {
                "kind": "bundled",
                "name": BUNDLED_NAME,
                "bytes": 0,
                "backend": NO_BACKEND,
                "path": f"(missing: {missing})",
            }
        )
    cache = converted_models_dir()
    if cache.is_dir():
        rows += [
            _row("converted", d.name, d, _backend(d)) for d in sorted(cache.iterdir()) if d.is_dir() and is_complete(d)
        ]
    rows += _hub_cache_rows()
    return rows


def _backend(directory: Path) -> str:
    """The backend `load(directory)` (backend "auto") would choose."""
    from decodelab.loading import claiming_loader

    loader = claiming_loader(directory)
    return loader.name if loader is not None else NO_BACKEND


def _hub_cache_rows() -> list[dict]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no hub cache yet, or an unreadable one: nothing to list
        return []
    from decodelab.loading import hub_loader

    backend = hub_loader("auto").name
    return [
        {
            "kind": "hub-cache",
            "name": repo.repo_id,
            "bytes": repo.size_on_disk,
            "backend": backend,
            "path": str(repo.repo_path),
        }
        for repo in sorted(cache.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]


def _row(kind: str, name: str, path: Path, backend: str) -> dict:
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"kind": kind, "name": name, "bytes": size, "backend": backend, "path": str(path)}


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
