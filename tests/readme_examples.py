"""Runs a README's examples: its ```python blocks in order in one namespace, and each `$ decodelab` line."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys


def code_blocks(markdown: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", markdown, flags=re.DOTALL)


def run_python_blocks(markdown: str, filename: str) -> int:
    """Executes every python block; returns how many there were."""
    blocks = code_blocks(markdown, "python")
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, filename, "exec"), namespace)
    return len(blocks)


def console_commands(markdown: str) -> list[str]:
    return [
        line[2:] for block in code_blocks(markdown, "console") for line in block.splitlines() if line.startswith("$ ")
    ]


def run_console_command(command: str) -> None:
    """Runs one `decodelab ...` line; it must succeed and print something."""
    argv = shlex.split(command)
    assert argv[0] == "decodelab"
    result = subprocess.run(
        [sys.executable, "-m", "decodelab", *argv[1:]],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
