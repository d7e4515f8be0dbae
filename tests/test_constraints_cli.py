"""The constraint flags (--json-schema, --json-object, --regex, --choice, --grammar) on generate, beam, compare and
plot: what each prints, and every mistake as one line before the model loads. Run in-process on the bundled model
(`load_model` patched to hand it over), as the beam and plot CLI tests do."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from decodelab.cli import main
from decodelab.tokens import visible

NAME = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 8}},
    "required": ["name"],
    "additionalProperties": False,
}
COMMANDS = ("generate", "beam", "compare", "plot")


@pytest.fixture
def cli(monkeypatch, capsys, bundled):
    """Runs `decodelab ARGS` in this process; returns (exit code, stdout, stderr)."""
    for command in COMMANDS:
        monkeypatch.setattr(f"decodelab.cli.{command}.load_model", lambda args: bundled)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_generate_trace_marks_where_the_constraint_overruled_the_model(cli, bundled):
    code, out, _ = cli("generate", "Is the sky blue? Answer:", "--choice", " yes, no", "--greedy", "--trace")
    assert code == 0
    expected = bundled.generate("Is the sky blue? Answer:", choice=[" yes", " no"], greedy=True)
    lines = out.splitlines()
    assert lines[0] == 'constraint: choice [" yes", " no"]'
    step_lines = [line for line in lines[1:] if re.match(r"\s*\d+  ", line)]
    notes = [line.strip() for line in lines[1:] if line.startswith("     constraint: ")]
    assert len(step_lines) == len(notes) == len(expected.steps)
    for step, line, note in zip(expected.steps, step_lines, notes):
        (report,) = step.stages
        assert note.startswith(f"constraint: {report.kept} token")
        assert f"{report.removed_mass:.2%} of the model's probability removed" in note
        wanted = visible(step.raw_top[0].piece)
        assert (f"model wanted {wanted!r}; the constraint forbade it" in note) == (step.overruled_by == "constraint")
        if step.rank != 1:  # greedy under a constraint may take a token the model did not rank first
            assert f"(rank {step.rank}," in line
    assert any(step.overruled_by for step in expected.steps)
    assert lines[-1] == f"row 0: constraint complete; text: {expected.text!r}"


def test_generate_json_carries_the_constraint_and_its_stage_reports(cli):
    code, out, _ = cli("generate", "Today's date is", "--regex", r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]", "--json")
    assert code == 0
    *steps, final = [json.loads(line) for line in out.splitlines()]
    assert final["constraint"] == {"kind": "regex", "source": r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]"}
    assert re.fullmatch(r" 20[0-9]{2}-[01][0-9]-[0-3][0-9]", final["text"])
    assert final["stop_reason"]["kind"] == "constraint_complete"
    assert all(step["stages"][0]["name"] == "constraint" for step in steps)
    assert {step["overruled_by"] for step in steps} <= {None, "constraint"}


def test_a_schema_file_and_the_same_schema_inline_constrain_alike(cli, tmp_path):
    schema = tmp_path / "name.json"
    schema.write_text(json.dumps(NAME))
    texts = []
    for given in (str(schema), json.dumps(NAME)):
        code, out, err = cli(
            "generate", "A person as JSON:", "--json-schema", given, "--greedy", "--max-new-tokens", "30"
        )
        assert code == 0 and "[constraint complete]" in err
        texts.append(out.rstrip("\n"))
    assert texts[0] == texts[1]
    jsonschema.validate(json.loads(texts[0]), NAME)
    code, out, _ = cli("generate", "A person as JSON:", "--json-object", "--greedy", "--max-new-tokens", "3", "--json")
    final = json.loads(out.splitlines()[-1])
    assert code == 0 and final["constraint"]["kind"] == "json_object" and final["text"].startswith("{")


def test_lark_and_gbnf_grammar_files(cli, tmp_path):
    (tmp_path / "sum.lark").write_text('start: num " + " num\nnum: /[0-9]{1,2}/\n')
    (tmp_path / "sum.gbnf").write_text('root ::= num " + " num\nnum ::= [0-9] [0-9]?\n')
    for name in ("sum.lark", "sum.gbnf"):
        code, out, _ = cli("generate", "Arithmetic:", "--grammar", str(tmp_path / name), "--seed", "3", "--n", "3")
        assert code == 0
        texts = [line for line in out.splitlines() if not line.startswith("---")]
        assert len(texts) == 3 and all(re.fullmatch(r"[0-9]{1,2} \+ [0-9]{1,2}", text) for text in texts), out


def test_a_choice_as_a_json_list_may_hold_commas(cli):
    options = [" yes, of course", " no, never"]
    code, out, _ = cli("generate", "Is the sky blue? Answer:", "--choice", json.dumps(options), "--seed", "1")
    assert code == 0 and out.rstrip("\n") in options


def test_beam_and_compare_run_every_strategy_under_the_constraint(cli):
    options = " Paris, Lyon, the city of Marseille"
    code, out, _ = cli("beam", "The best French city is", "--choice", options, "--beams", "3", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["config"]["constraint"]["kind"] == "choice"
    assert data["sequences"][0]["text"] in options.split(",")
    assert data["sequences"][0]["finished_by"]["kind"] == "constraint_complete"
    code, out, _ = cli("beam", "The best French city is", "--choice", options, "--beams", "2", "--tree")
    assert code == 0 and out.startswith('constraint: choice [" Paris", " Lyon", " the city of Marseille"]\n--- #1')
    code, out, _ = cli(
        "compare", "The capital of France is", "--strategies", "greedy; beam:2; top_p:0.9", "--regex", r" [A-Z][a-z]+\."
    )
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == r"every strategy under the constraint regex  [A-Z][a-z]+\."
    texts = [lines[i + 1] for i, line in enumerate(lines) if line.startswith("--- ")]
    assert len(texts) == 3 and all(re.fullmatch(r"[A-Z][a-z]+\.", text) for text in texts)  # stripped of its space
    code, out, _ = cli("compare", "The capital of France is", "--strategies", "greedy", "--choice", " Paris", "--json")
    data = json.loads(out)
    assert data["constraint"]["kind"] == "choice" and data["outcomes"][0]["text"] == " Paris"


def test_plot_trace_and_beam_take_a_constraint(cli, tmp_path):
    trace = tmp_path / "trace.svg"
    schema = json.dumps(NAME)
    code, out, _ = cli("plot", "trace", "A person as JSON:", "--json-schema", schema, "--greedy", "--out", str(trace))
    assert code == 0 and out.strip() == f"wrote {trace}"
    assert "removed by" in trace.read_text(encoding="utf-8")  # the constraint's panel
    beam = tmp_path / "beam.png"
    code, _, _ = cli("plot", "beam", "Is the sky blue? Answer:", "--choice", " yes, no", "--out", str(beam))
    assert code == 0 and beam.stat().st_size > 1000


@pytest.mark.parametrize(
    "flags, message",
    [
        (("--json-schema", "missing.json"), "argument --json-schema: no such JSON schema file: 'missing.json'"),
        (("--json-schema", "{not json"), "argument --json-schema: the JSON schema is not JSON"),
        (("--json-schema", "{BAD_SCHEMA}"), "bad.json: the json schema constraint does not compile"),
        (("--regex", "(unclosed"), "argument --regex: the regex constraint does not compile"),
        (("--choice", " yes,,no"), "argument --choice: ' yes,,no' has an empty option"),
        (("--choice", '[" yes", '), "starts like a JSON list but is not JSON"),
        (("--choice", "[]"), "a choice constraint needs a list of non-empty strings"),
        (("--grammar", "missing.lark"), "argument --grammar: no such grammar file: 'missing.lark'"),
        (("--grammar", "{BAD_GRAMMAR}"), "bad.lark: the grammar constraint does not compile"),
        (("--regex", "a", "--choice", "b"), "argument --choice: not allowed with argument --regex"),
    ],
)
@pytest.mark.parametrize("command", ["generate", "beam", "compare", "plot"])
def test_each_mistake_is_one_line_before_the_model_loads(monkeypatch, capsys, tmp_path, command, flags, message):
    (tmp_path / "bad.json").write_text('{"type": "object", "properties": {"a": {"type": "nonsense"}}}')
    (tmp_path / "bad.lark").write_text("start: undefined_rule\n")
    monkeypatch.chdir(tmp_path)
    for module in COMMANDS:  # the flags fail while the arguments are read: no model is ever asked for
        monkeypatch.setattr(f"decodelab.cli.{module}.load_model", lambda args: pytest.fail("loaded a model"))
    given = [{"{BAD_SCHEMA}": "bad.json", "{BAD_GRAMMAR}": "bad.lark"}.get(flag, flag) for flag in flags]
    argv = {"plot": ["plot", "trace", "Hi", "--out", "x.png"]}.get(command, [command, "Hi"])
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *given])
    assert exit_.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], lines
