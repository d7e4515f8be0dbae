"""Every notebook in examples/ runs clean from top to bottom, and shows what it is there to show.

Notebooks are committed without outputs; here each one is executed in a fresh kernel (the `python3` kernel, i.e.
this interpreter's ipykernel) with a temporary working directory, so nothing is written into the repository.
Several notebooks hold their own parity checks as `assert` cells (a hand-written loop and transformers'
`generate` equal decodelab's); an assert that fails is a cell error and fails the test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).parent.parent / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell

# Per notebook: text some output must contain (the parity checks' messages, Korean that must survive the round
# trip), and how many PNG figures it must show at least.
EXPECTED = {
    "01_chat_generation": (["hand loop == lm.generate", "transformers generate == lm.generate", "사랑"], 0),
    "02_plain_text_generation": (["hand loop == lm.generate", "transformers generate == lm.generate"], 0),
    "03_greedy_search": (["hand table == decodelab's steps", "transformers generate == lm.generate"], 1),
    "04_one_token_at_a_time": (["session steps == lm.generate", "안", "녕"], 1),
    "05_decoding_methods": (["picks ' girl'"], 6),
    "06_tiny_gpt": (["nats/byte", "한"], 4),
}


def test_every_notebook_has_expectations():
    assert {path.stem for path in NOTEBOOKS} == set(EXPECTED)


def test_notebooks_are_committed_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name}: clear the outputs"


def output_text(output) -> str:
    """Everything a reader sees as text in one output: streams, plain text and HTML."""
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    return data.get("text/plain", "") + data.get("text/html", "")


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_clean(path, tmp_path):
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # a cell that raises (an assert included) raises CellExecutionError here

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    text = "\n".join(output_text(output) for output in outputs)
    phrases, figures = EXPECTED[path.stem]
    for phrase in phrases:
        assert phrase in text, f"{path.name}: no output shows {phrase!r}"
    pngs = sum("image/png" in output.get("data", {}) for output in outputs)
    assert pngs >= figures, f"{path.name}: {pngs} inline PNG figures, expected at least {figures}"
    stderr = "".join(output.text for output in outputs if output.output_type == "stream" and output.name == "stderr")
    assert "missing from font" not in stderr, "a glyph (Hangul?) could not be drawn"
    assert list(tmp_path.iterdir()) == [], "a notebook left files in its working directory"
