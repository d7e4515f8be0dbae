"""Scoring and comparing a JSONL file of inputs (`decodelab.batch`, `decodelab score|compare --jsonl`): against a
`decodelab serve` subprocess, several at once, its scores equal the local engine's; a rerun resumes where an
interrupted run stopped (a partial last line dropped); a server that dies mid-run stops the run with one clear
error and whole lines only, and a rerun against another server finishes it; a bad input line is one error
naming it, before any work."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import decodelab
from decodelab.batch import BatchStopped, compare_jsonl, score_jsonl
from decodelab.batch.progress import ProgressBar
from decodelab.batch.runner import stops_the_run
from decodelab.cli import main
from decodelab.errors import BadInput, Unsupported
from decodelab.remote.client import RemoteError
from serve_process import decodelab_serve

CLOSE = 1e-3  # nats: the server computes each position from a prefill of the whole prefix, as tests/test_remote.py
# The same text scored twice: the server prefills scored prompts that arrive together as one padded batch, and
# which texts share a batch differs between runs (float32 matmuls summed in another order: ~5e-5 measured).
BESIDE_OTHERS = 1e-4
SUBJECTS = ("the sea", "a dragon", "the moon", "a robot", "a baker", "a storm")


def inputs(count: int) -> list[dict]:
    """`count` input lines: an id on most, a prompt on every third, and one line with neither id nor prompt."""
    lines: list[dict] = []
    for n in range(count):
        line: dict = {"id": f"t{n}", "text": f" {n + 1}. A short note about {SUBJECTS[n % len(SUBJECTS)]}."}
        if n % 3 == 0:
            line["prompt"] = "Write a line:"
        if n == 1:
            del line["id"]  # its line number is its id
        lines.append(line)
    return lines


def write_jsonl(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def read_results(path: Path) -> dict:
    """The result lines of `path` by id; every id must appear once and every line be whole."""
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    records = [json.loads(line) for line in text.splitlines()]
    by_id = {record["id"]: record for record in records}
    assert len(by_id) == len(records), "an id appears twice"
    return by_id


def logprobs(record: dict) -> list[float]:
    return [token["logprob"] for token in record["tokens"]]


@pytest.fixture(scope="module")
def clean_run(remote, tmp_path_factory):
    """Twelve texts scored on the server, four at a time, in one uninterrupted run: (input file, results)."""
    directory = tmp_path_factory.mktemp("clean")
    source = write_jsonl(directory / "texts.jsonl", inputs(12))
    summary = score_jsonl(remote, source, directory / "scores.jsonl", concurrency=4, quiet=True)
    assert (summary.written, summary.errors, summary.workers) == (12, 0, 4)
    return source, read_results(directory / "scores.jsonl")


def test_a_file_scored_on_a_server_equals_the_local_engines_scores(clean_run, bundled):
    _, results = clean_run
    assert set(results) == {line.get("id", 2) for line in inputs(12)}
    for number, line in enumerate(inputs(12), start=1):
        record = results[line.get("id", number)]
        local = bundled.score(line["text"], line.get("prompt"))
        assert record["model"] == bundled.name and record["mode"]["remote"] == "decodelab"
        assert [token["id"] for token in record["tokens"]] == [token.id for token in local.tokens]
        assert logprobs(record) == pytest.approx([token.logprob for token in local.tokens], abs=CLOSE)


def test_a_rerun_resumes_after_a_partial_line(clean_run, remote, tmp_path):
    source, results = clean_run
    lines = source.read_text().splitlines()
    kept = [json.dumps(results[json.loads(line).get("id", 2)]) for line in lines[:5]]
    half = json.dumps(results["t5"])[:80]
    out = tmp_path / "scores.jsonl"
    out.write_text("\n".join(kept) + "\n" + half, encoding="utf-8")  # what a crash mid-write could leave
    summary = score_jsonl(remote, source, out, concurrency=4, quiet=True)
    assert (summary.skipped, summary.written, summary.dropped_partial_line) == (5, 7, True)
    resumed = read_results(out)
    assert set(resumed) == set(results)
    for key, record in resumed.items():
        assert logprobs(record) == pytest.approx(logprobs(results[key]), abs=BESIDE_OTHERS)
    again = score_jsonl(remote, source, out, quiet=True)  # all done: nothing runs
    assert again.written == 0 and "nothing to do" in again.describe()


def test_a_server_that_dies_mid_run_stops_it_and_a_rerun_finishes_it(remote, bundled, tmp_path):
    source = write_jsonl(tmp_path / "texts.jsonl", inputs(24))
    out = tmp_path / "scores.jsonl"
    with decodelab_serve(tmp_path) as (url, _, process):
        dying = decodelab.load(url + "/v1")
        dying.backend.client.retries, dying.backend.client.backoff = 1, 0.01

        def kill_after_three_results() -> None:
            deadline = time.monotonic() + 300
            while (not out.exists() or out.read_text().count("\n") < 3) and time.monotonic() < deadline:
                time.sleep(0.005)
            process.kill()

        killer = threading.Thread(target=kill_after_three_results, daemon=True)
        killer.start()
        with pytest.raises(BatchStopped) as stopped:
            score_jsonl(dying, source, out, concurrency=2, quiet=True)
        killer.join()
    message = str(stopped.value)
    assert "\n" not in message and "cannot reach" in message and "rerun the same command" in message
    done = read_results(out)  # whole lines only
    assert 3 <= len(done) < 24 and f"{len(done)} of 24 results are in" in message
    summary = score_jsonl(remote, source, out, concurrency=4, quiet=True)  # another server, the same model
    assert summary.skipped == len(done) and summary.written == 24 - len(done)
    finished = read_results(out)
    assert len(finished) == 24
    record = finished["t23"]
    assert logprobs(record) == pytest.approx(
        [t.logprob for t in bundled.score(inputs(24)[23]["text"]).tokens], abs=CLOSE
    )


def test_an_items_own_failure_is_recorded_and_the_run_goes_on(remote, tmp_path):
    source = write_jsonl(tmp_path / "texts.jsonl", [{"id": "one", "text": "x"}, {"id": "two", "text": " a b c"}])
    summary = score_jsonl(remote, source, tmp_path / "scores.jsonl", quiet=True)
    assert (summary.written, summary.errors) == (2, 1)
    results = read_results(tmp_path / "scores.jsonl")
    assert results["one"] == {"id": "one", "error": results["one"]["error"]}
    assert "give a longer text or a prompt" in results["one"]["error"] and "tokens" in results["two"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", r"line 3 is not JSON .* a line is a JSON object such as"),
        ('["a list"]', r"line 3 is .*, not a JSON object"),
        ('{"id": 5}', r"line 3 has no 'text' field"),
        ('{"text": "a b", "promt": "x"}', r"line 3 has the field 'promt', which is not read: a line holds 'text'"),
        ('{"text": ""}', r"line 3: 'text' must be a non-empty string, got ''"),
        ('{"text": "a b", "id": 1.5}', r"line 3: 'id' must be a string or a whole number, got 1.5"),
        ('{"text": "a b", "id": "x"}', r"line 3: its id 'x' is also line 1's"),
        ('{"text": "a b", "id": 2}', r"line 3: its id 2 is also line 2's \(a line without an id"),
    ],
)
def test_a_bad_input_line_is_one_error_naming_it_before_any_work(bundled, tmp_path, line, message):
    source = tmp_path / "texts.jsonl"
    source.write_text('{"id": "x", "text": "a b"}\n{"text": "c d"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(BadInput, match=message) as failed:
        score_jsonl(bundled, source, tmp_path / "scores.jsonl", quiet=True)
    assert "\n" not in str(failed.value) and "texts.jsonl" in str(failed.value)
    assert not (tmp_path / "scores.jsonl").exists()


def test_a_file_another_model_wrote_is_not_resumed(remote, bundled, tmp_path):
    source = write_jsonl(tmp_path / "texts.jsonl", inputs(2))
    out = tmp_path / "scores.jsonl"
    score_jsonl(bundled, source, out, quiet=True)
    out.write_text(out.read_text().splitlines()[0] + "\n")
    with pytest.raises(BadInput, match=r"line 1 holds a result of mode 'float32', and this run's is 'remote"):
        score_jsonl(remote, source, out, quiet=True)


def test_compare_over_a_file_on_a_server_gives_each_prompts_outcomes(remote, bundled, tmp_path):
    prompts = [{"id": n, "prompt": f"Once upon a time, {subject}"} for n, subject in enumerate(SUBJECTS[:3])]
    source = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    summary = compare_jsonl(
        remote, source, tmp_path / "outcomes.jsonl", strategies="greedy", max_new_tokens=5, concurrency=3, quiet=True
    )
    assert summary.written == 3
    for key, record in read_results(tmp_path / "outcomes.jsonl").items():
        (outcome,) = record["outcomes"]
        local = bundled.generate(prompts[key]["prompt"], greedy=True, max_new_tokens=5)
        assert outcome["strategy"] == "greedy" and outcome["token_ids"] == local.token_ids
        assert record["seed"] == 0 and record["constraint"] is None and record["prompt_tokens"] > 0


def test_the_command_line_scores_a_file_on_a_server(served, clean_run, tmp_path):
    source, results = clean_run
    out = tmp_path / "scores.jsonl"
    command = [sys.executable, "-m", "decodelab", "score", "--model", served[0] + "/v1"]
    ran = subprocess.run(
        [*command, "--jsonl", str(source), "--out", str(out), "--concurrency", "4"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "" and f"wrote 12 results to {out}" in ran.stderr
    assert "\r" not in ran.stderr  # no progress bar where standard error is not a terminal
    written = read_results(out)
    assert set(written) == set(results)
    assert logprobs(written["t7"]) == pytest.approx(logprobs(results["t7"]), abs=BESIDE_OTHERS)


def test_the_command_line_compares_a_file_on_the_local_model(bundled, tmp_path, capsys):
    source = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "The sea is"}, {"prompt": "The moon is"}])
    out = tmp_path / "outcomes.jsonl"
    argv = ["compare", "--jsonl", str(source), "--out", str(out), "--strategies", "greedy; top_k:5"]
    assert main([*argv, "--max-new-tokens", "4", "--concurrency", "2"]) == 0
    assert "runs here: one input at a time" in capsys.readouterr().err
    results = read_results(out)
    single = ["compare", "The sea is", "--strategies", "greedy; top_k:5", "--max-new-tokens", "4", "--json"]
    assert main(single) == 0
    printed = json.loads(capsys.readouterr().out)
    assert results[1] == {"id": 1, **printed}  # each line is what --json prints, with its id


@pytest.mark.parametrize(
    "argv, message",
    [
        (["score"], "give TEXT, or --jsonl IN --out OUT"),
        (["score", "a b", "--jsonl", "in.jsonl"], "give TEXT or --jsonl IN, not both"),
        (["score", "--jsonl", "in.jsonl"], "--jsonl IN needs --out OUT"),
        (["score", "--jsonl", "in.jsonl", "--out", "o", "--prompt", "p"], "--prompt applies to one TEXT"),
        (["score", "a b", "--concurrency", "2"], "--concurrency applies with --jsonl IN"),
        (["compare", "--jsonl", "in.jsonl", "--out", "o", "--json"], "--json applies to one PROMPT"),
        (["compare", "--jsonl", "missing.jsonl", "--out", "o"], "no such input file: 'missing.jsonl'"),
    ],
)
def test_the_command_lines_mistakes_are_one_line(argv, message, capsys):
    assert main(argv) == 1
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, stops",
    [
        (
            RemoteError(
                "cannot reach http://h/v1/completions (ConnectError: refused) after 5 tries: ...", reachable=False
            ),
            True,
        ),
        (RemoteError("http://h/v1/completions answered 503: busy", 503), True),
        (RemoteError("http://h/v1/completions answered 429: slow down", 429), True),
        (RemoteError("http://h/v1/completions answered 400: prompt too long", 400), False),
        (RemoteError("http://h/v1/completions answered 500: internal error", 500), False),
        (BadInput("text is empty"), False),
        (Unsupported("scoring every position needs echo"), True),
        (ValueError("a bug"), True),
    ],
)
def test_which_failures_stop_the_run(error, stops):
    assert stops_the_run(error) is stops


def test_the_progress_bar_counts_rate_and_time_left_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    bar = ProgressBar(10, 4, stream=terminal)
    bar.advance()
    bar.finish()
    assert terminal.getvalue().startswith("\r[") and " 5/10   50%  " in terminal.getvalue()
    assert "/s  eta " in terminal.getvalue() and terminal.getvalue().endswith("\n")
    quiet = Terminal()
    ProgressBar(10, 0, quiet=True, stream=quiet).advance()
    assert quiet.getvalue() == ""
