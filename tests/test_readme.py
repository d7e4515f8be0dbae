"""Every example in the README runs: Python blocks in order in one namespace, and each `$ decodelab` line."""

from pathlib import Path

import pytest

from readme_examples import console_commands, run_console_command, run_python_blocks

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_python_examples_run(capsys):
    assert run_python_blocks(README, "README.md") >= 3
    output = capsys.readouterr().out
    assert "['Transform', 'ers', ' are', ' the']" in output


@pytest.mark.parametrize("command", console_commands(README))
def test_console_examples_run(command):
    run_console_command(command)
