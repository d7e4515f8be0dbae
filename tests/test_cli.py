"""The `decodelab` command, run as a user runs it: a separate process, real output, real exit codes."""

import json
import subprocess
import sys

import pytest

KOREAN = "안녕하세요, 세계! 토큰을 배워요 😀"


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "decodelab", *args], input=stdin, capture_output=True, text=True,
        encoding="utf-8", timeout=300,
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
