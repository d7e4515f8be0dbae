"""Every example in the Korean quickstart runs: Python blocks in order in one namespace, and each `$ decodelab`
line, as tests/test_readme.py checks README.md."""

from pathlib import Path

import pytest

from readme_examples import console_commands, run_console_command, run_python_blocks

README_KO = (Path(__file__).parent.parent / "README.ko.md").read_text(encoding="utf-8")


def test_links_to_the_english_readme_and_the_notebooks():
    assert "(README.md)" in README_KO
    for notebook in sorted((Path(__file__).parent.parent / "examples").glob("*.ipynb")):
        assert f"(examples/{notebook.name})" in README_KO, f"README.ko.md does not list {notebook.name}"


@pytest.mark.slow
def test_python_examples_run(capsys):
    assert run_python_blocks(README_KO, "README.ko.md") >= 6
    output = capsys.readouterr().out
    assert "['Transform', 'ers', ' are', ' the']" in output
    assert "안" in output  # the token table names the syllable each byte token belongs to
    assert "['beam.svg', 'methods.png', 'temperature.png']" in output
    assert "['<0xED>', '<0x95>', '<0x9C>']" in output


@pytest.mark.parametrize("command", console_commands(README_KO))
def test_console_examples_run(command):
    run_console_command(command)
