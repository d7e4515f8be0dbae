"""The sampler list of the README, written from the registry: `python -m decodelab.samplers.catalog README.md`
rewrites the block between the markers, and a test checks the README holds exactly what this writes."""

from __future__ import annotations

import sys
from pathlib import Path

from decodelab.errors import BadInput
from decodelab.samplers.registry import STAGES

BEGIN = "<!-- samplers: written by `python -m decodelab.samplers.catalog README.md`; do not edit -->"
END = "<!-- /samplers -->"


def markdown() -> str:
    """One table row per stage, in default order: its settings (config field = request field, CLI flag)."""
    lines = [
        "| # | stage | settings (`--flag`) | greedy | what it does |",
        "|---|---|---|---|---|",
    ]
    for place, stage in enumerate(STAGES.values(), start=1):
        settings = ", ".join(f"`{s.name}` (`--{s.name.replace('_', '-')} {s.metavar}`)" for s in stage.settings)
        greedy = "skipped" if stage.warper else "applied"
        doc = " ".join((stage.__doc__ or "").strip().split("\n\n")[0].split())  # its first paragraph
        lines.append(f"| {place} | `{stage.name}` | {settings} | {greedy} | {doc} |")
    return "\n".join(lines)


def block() -> str:
    return f"{BEGIN}\n{markdown()}\n{END}"


def rewrite(text: str) -> str:
    """`text` with the block between the markers replaced by the current catalog."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise BadInput(f"the markers {BEGIN!r} ... {END!r} are not in the file: add them where the list goes")
    return text[:start] + block() + text[end + len(END) :]


def main(argv: list[str]) -> int:
    for name in argv:
        path = Path(name)
        path.write_text(rewrite(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
