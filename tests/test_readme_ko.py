"""Every example in the Korean quickstart runs: Python blocks in order in one namespace, and each `$ decodelab`
line, as tests/test_readme.py checks README.md."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README_KO = (Path(__file__).parent.parent / "README.ko.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README_KO, flags=re.DOTALL)


def test_links_to_the_english_readme_and_the_notebooks():
    assert "(README.md)" in README_KO
    for notebook in sorted((Path(__file__).parent.parent / "examples").glob("*.ipynb")):
        assert f"(examples/{notebook.name})" in README_KO, f"README.ko.md does not list {notebook.name}"


@pytest.mark.slow
def test_python_examples_run(capsys):
    blocks = code_blocks("python")
    assert len(blocks) >= 6
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.ko.md", "exec"), namespace)
    output = capsys.readouterr().out
    assert "['Transform', 'ers', ' are', ' the']" in output
    assert "안" in output  # the token table names the syllable each byte token belongs to
    assert "['beam.svg', 'methods.png', 'temperature.png']" in output
    assert "['<0xED>', '<0x95>', '<0x9C>']" in output


COMMANDS = [line[2:] for block in code_blocks("console") for line in block.splitlines() if line.startswith("$ ")]


@pytest.mark.parametrize("command", COMMANDS)
def test_console_examples_run(command):
    argv = shlex.split(command)
    assert argv[0] == "decodelab"
    result = subprocess.run([sys.executable, "-m", "decodelab", *argv[1:]], capture_output=True, text=True,
                            encoding="utf-8", timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
