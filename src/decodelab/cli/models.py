"""`decodelab models`: the bundled model, decodelab's converted cache, and Hugging Face cached models."""

from __future__ import annotations

import argparse
from pathlib import Path

from decodelab.cli.options import add_json_option, print_json
from decodelab.errors import DecodelabError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("models", help="list the bundled and cached models with their sizes")
    add_json_option(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    rows = list_models()
    if args.json:
        print_json({"models": rows})
        return 0
    width = max([len(row["name"]) for row in rows] + [4])
    print(f"{'kind':<10}  {'name':<{width}}  {'size':>9}  path")
    for row in rows:
        print(f"{row['kind']:<10}  {row['name']:<{width}}  {human_size(row['bytes']):>9}  {row['path']}")
    return 0


def list_models() -> list[dict]:
    """One row per model decodelab can load without a download: kind, name, bytes on disk, path."""
    from decodelab.gguf_cache import BUNDLED_NAME, bundled_gguf_path, is_complete
    from decodelab.home import converted_models_dir

    rows = []
    try:
        gguf = bundled_gguf_path()
        rows.append(_row("bundled", BUNDLED_NAME, gguf))
    except DecodelabError as missing:
        rows.append({"kind": "bundled", "name": BUNDLED_NAME, "bytes": 0, "path": f"(missing: {missing})"})
    cache = converted_models_dir()
    if cache.is_dir():
        rows += [_row("converted", d.name, d) for d in sorted(cache.iterdir()) if d.is_dir() and is_complete(d)]
    rows += _hub_cache_rows()
    return rows


def _hub_cache_rows() -> list[dict]:
    try:
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir()
    except Exception:  # no hub cache yet, or an unreadable one: nothing to list
        return []
    return [
        {"kind": "hub-cache", "name": repo.repo_id, "bytes": repo.size_on_disk, "path": str(repo.repo_path)}
        for repo in sorted(cache.repos, key=lambda r: r.repo_id)
        if repo.repo_type == "model"
    ]


def _row(kind: str, name: str, path: Path) -> dict:
    size = path.stat().st_size if path.is_file() else sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {"kind": kind, "name": name, "bytes": size, "path": str(path)}


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"
