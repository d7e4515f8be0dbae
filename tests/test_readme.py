"""Every example in the README runs: Python blocks in order in one namespace, and each `$ decodelab` line."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = (Path(__file__).parent.parent / "README.md").read_text()


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_python_examples_run(capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 3
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    output = capsys.readouterr().out
    assert "['Transform', 'ers', ' are', ' the']" in output


COMMANDS = [line[2:] for block in code_blocks("console") for line in block.splitlines() if line.startswith("$ ")]


@pytest.mark.parametrize("command", COMMANDS)
def test_console_examples_run(command):
    argv = shlex.split(command)
    assert argv[0] == "decodelab"
    result = subprocess.run([sys.executable, "-m", "decodelab", *argv[1:]], capture_output=True, text=True,
                            encoding="utf-8", timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
