"""The `decodelab` command, run as a user runs it: a separate process, real output, real exit codes."""

import json
import subprocess
import sys

import pytest

KOREAN = "안녕하세요, 세계! 토큰을 배워요 😀"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decodelab", *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )


def test_tokens_json_round_trips_korean(bundled):
    result = run("tokens", KOREAN, "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["model"] == "SmolLM2-135M-Instruct" and payload["text"] == KOREAN
    tokens = payload["tokens"]
    assert set(tokens[0]) >= {"id", "piece", "start", "end", "special"}
    assert all("\ufffd" not in token["piece"] for token in tokens)
    assert bundled.tokenizer.decode([token["id"] for token in tokens]) == KOREAN
    assert b"".join(bytes.fromhex(token["bytes"]) for token in tokens) == KOREAN.encode()


def test_tokens_table_and_stdin(bundled):
    result = run("tokens", "-", stdin="Transformers are the")
    assert result.returncode == 0, result.stderr
    for token in bundled.tokenize("Transformers are the"):
        assert str(token.id) in result.stdout
    assert "␣the" in result.stdout and "Ġ" not in result.stdout


def test_tokens_chat_view_shows_template_specials_and_stops(bundled):
    result = run("tokens", "--chat", "--system", "Be brief.", "Hi", "--stop", "\n\n")
    assert result.returncode == 0, result.stderr
    assert "⟦<|im_start|>⟧system\nBe brief.⟦<|im_end|>⟧" in result.stdout  # highlighted (not a terminal)
    assert "generation stops on: <|endoftext|> (0), <|im_end|> (2), '\\n\\n'" in result.stdout
    payload = json.loads(run("tokens", "--chat", "Hi", "--json").stdout)
    assert payload["text"] == bundled.chat_prompt("Hi")
    assert payload["stop_ids"] == sorted(bundled.stop_ids())
    assert [t["piece"] for t in payload["tokens"] if t["special"]].count("<|im_start|>") == 3


def test_next_json_matches_the_api(bundled):
    result = run("next", "The capital of France is", "--top", "4", "--json")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    expected = bundled.next_token_distribution("The capital of France is")
    assert payload["prompt_tokens"] == len(expected.prompt_ids)
    assert payload["entropy"] == pytest.approx(expected.entropy, rel=1e-5)
    assert [c["id"] for c in payload["top"]] == [c.id for c in expected.top(4)]
    assert [c["rank"] for c in payload["top"]] == [1, 2, 3, 4]
    assert payload["top"][0]["piece"] == " Paris"
    assert payload["top"][0]["prob"] == pytest.approx(expected.top(1)[0].prob, rel=1e-5)


def test_next_table():
    result = run("next", "--chat", "What is the capital of France?", "--top", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["rank", "id", "token", "prob", "logprob"]
    assert len(lines) == 5 and "entropy" in lines[-1] and "%" in lines[1]


def test_models_lists_bundled_and_converted(bundled):
    result = run("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)["models"]
    kinds = {row["kind"]: row for row in rows}
    assert kinds["bundled"]["name"] == "SmolLM2-135M-Instruct" and kinds["bundled"]["bytes"] > 50_000_000
    assert any(row["path"] == str(bundled.path) and row["bytes"] > 100_000_000 for row in rows)
    assert "SmolLM2-135M-Instruct" in run("models").stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (("tokens", ""), "text is empty"),
        (("next", ""), "prompt is empty"),
        (("next", "Hi", "--top", "0"), "argument --top: must be at least 1, got 0"),
        (("next", "Hi", "--top", "many"), "argument --top: must be a whole number, got 'many'"),
        (("tokens", "Hi", "--model", "/no/such/model"), "no such model file or directory: /no/such/model"),
        (("next", "Hi", "--model", "{corrupt}"), "is not a GGUF file"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, args, message):
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"\x00" * 64)
    result = run(*(str(corrupt) if a == "{corrupt}" else a for a in args))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_generate_json_lines_match_the_api(bundled):
    result = run("generate", "The capital of France is", "--greedy", "--max-new-tokens", "6", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    steps, final = lines[:-1], lines[-1]
    expected = bundled.generate("The capital of France is", greedy=True, max_new_tokens=6)
    assert [s["id"] for s in steps] == expected.token_ids == final["token_ids"]
    assert [s["step"] for s in steps] == list(range(len(steps)))
    for line, step in zip(steps, expected.steps):
        assert {"step", "id", "piece", "prob", "raw_prob", "logprob", "rank", "top"} <= set(line)
        assert line["logprob"] == pytest.approx(step.logprob, abs=1e-5) and line["rank"] == step.rank
        assert [a["id"] for a in line["top"]] == [a.id for a in step.top]
    assert final["text"] == expected.text and final["stop_reason"]["kind"] == expected.stop_reason.kind


def test_generate_trace_prints_the_tutorial_table(bundled):
    result = run("generate", "Transformers are the", "--greedy", "--max-new-tokens", "3", "--trace")
    assert result.returncode == 0, result.stderr
    first = bundled.generate("Transformers are the", greedy=True, max_new_tokens=1).steps[0]
    line = result.stdout.splitlines()[0]
    assert line.split("→")[0].strip() == "0  Transformers␣are␣the"
    top = first.raw_top[0]
    assert f"{top.piece.replace(' ', '␣')} ({top.prob:.2%})" in line and line.count("|") == 4
    assert "max new tokens" in result.stdout


def test_generate_streams_korean_whole(bundled):
    result = run("generate", "서울은 한국의", "--greedy", "--max-new-tokens", "30")
    assert result.returncode == 0, result.stderr
    expected = bundled.generate("서울은 한국의", greedy=True, max_new_tokens=30)
    assert result.stdout == expected.text + "\n" and "\ufffd" not in result.stdout
    assert "[max new tokens]" in result.stderr


def test_generate_n_samples_and_stop_strings(bundled):
    result = run("generate", "Once upon a time", "--n", "2", "--seed", "4", "--max-new-tokens", "8", "--json")
    finals = [json.loads(line) for line in result.stdout.splitlines() if "token_ids" in line]
    rows = bundled.sample("Once upon a time", n=2, seed=4, max_new_tokens=8)
    assert [f["token_ids"] for f in finals] == [r.token_ids for r in rows]
    assert [f["seed"] for f in finals] == [4, 5]
    free = bundled.generate("Transformers are the", greedy=True, max_new_tokens=12).text
    stopped = run("generate", "Transformers are the", "--greedy", "--max-new-tokens", "12", "--stop", free[8:14])
    assert stopped.stdout == free[:8] + "\n"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--top-p", "1.5"), "top_p must be in (0, 1], got 1.5"),
        (("--temperature", "-1"), "temperature must be at least 0.0001 (0 means greedy), got -1.0"),
        (("--top-k", "-1"), "top_k must be a whole number >= 1"),
        (("--samplers", "top_q"), "unknown sampler 'top_q'"),
        (("--top-k", "5", "--samplers", "temperature"), "top_k is set but missing from the sampler order"),
        (("--ban", " unbelievably"), "is 3 tokens, not one"),
        (("--max-new-tokens", "0"), "argument --max-new-tokens: must be at least 1, got 0"),
    ],
)
def test_generate_bad_parameters(args, message):
    result = run("generate", "Hi", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
