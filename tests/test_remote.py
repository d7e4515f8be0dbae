"""A model on another server as a decodelab model (`decodelab.load("http://...")`): against a `decodelab serve`
subprocess its greedy tokens, traces, scores, sampled draws, beams and sessions equal the local engine's; the
distribution it shows is honest about what the server did not say; a flaky or dead server is one clear error
after retries; and against llama.cpp's server (llama-cpp-python) its greedy tokens equal the server's own."""

from __future__ import annotations

import http.server
import json
import math
import subprocess
import sys
import threading

import httpx
import pytest

import decodelab
from decodelab.errors import BadInput, DecodelabError, Unsupported
from decodelab.remote.client import RemoteClient, RemoteError
from decodelab.remote.server_side import generate_on_server
from decodelab.scoring import score_ids
from serve_process import decodelab_serve

PROMPT = "The capital of France is"
CLOSE = 1e-4  # nats: the bar (measured: ~1e-6; the server computes each step as a prefill of the prefix)


def test_it_finds_the_server_its_model_and_its_tokenizer(remote, bundled):
    caps = remote.backend.capabilities
    assert (caps.engine, caps.model, caps.echo, caps.id_prompts) == ("decodelab", bundled.name, True, True)
    assert remote.context_length == bundled.context_length
    assert remote.tokenizer.encode("한국의 수도는 서울") == bundled.tokenizer.encode("한국의 수도는 서울")
    assert remote.tokenizer.chat_template == bundled.tokenizer.chat_template
    assert remote.stop_ids() == bundled.stop_ids()
    assert not remote.mode.exact and remote.mode.label == "remote (decodelab): its top logprobs"


def test_greedy_tokens_and_trace_equal_the_local_engines(remote, bundled):
    local = bundled.generate(PROMPT, greedy=True, max_new_tokens=8)
    far = remote.generate(PROMPT, greedy=True, max_new_tokens=8)
    assert far.token_ids == local.token_ids and far.text == local.text
    scored = score_ids(bundled, far.prompt_ids + far.token_ids, len(far.prompt_ids))
    for step, near, token in zip(far.steps, local.steps, scored.tokens):
        assert step.logprob == pytest.approx(token.logprob, abs=CLOSE)
        assert step.raw_prob == pytest.approx(near.raw_prob, abs=CLOSE)
        assert [a.id for a in step.raw_top[:3]] == [a.id for a in near.raw_top[:3]]
        (reported,) = step.stages
        # what the server did not say is reported, not hidden: the top 20 hold 1 - removed_mass of the mass
        assert reported.name == "reported" and reported.kept == 20
        held = sum(sorted(bundled_probs(bundled, far, step.index), reverse=True)[:20])
        assert 1 - reported.removed_mass == pytest.approx(held, abs=CLOSE)


def bundled_probs(bundled, result, index: int) -> list[float]:
    return bundled.next_token_distribution(result.prompt_ids + result.token_ids[:index]).probs.tolist()


def test_sampled_tokens_equal_the_local_engines_within_the_reported_tokens(remote, bundled):
    options = dict(temperature=0.8, top_k=20, seed=3, max_new_tokens=12)  # top_k 20: only reported tokens
    assert (
        remote.generate("Once upon a time", **options).token_ids
        == bundled.generate("Once upon a time", **options).token_ids
    )


def test_scores_come_from_the_servers_echo(remote, bundled):
    far, near = remote.score("The capital of France is Paris."), bundled.score("The capital of France is Paris.")
    assert [t.id for t in far.tokens] == [t.id for t in near.tokens]
    assert far.total_logprob == pytest.approx(near.total_logprob, abs=5 * CLOSE)
    assert [t.logprob for t in far.tokens] == pytest.approx([t.logprob for t in near.tokens], abs=CLOSE)


def test_a_session_steps_undoes_forks_and_forces_as_a_local_one(remote, bundled):
    sessions = [lm.session(PROMPT, greedy=True, max_new_tokens=20) for lm in (remote, bundled)]
    for session in sessions:
        for _ in range(4):
            session.step()
        session.undo(2)
        session.append(" London")
        twin = session.fork()
        twin.step()
        session.step()
        session.twin = twin  # type: ignore[attr-defined]
    far, near = sessions
    assert far.token_ids == near.token_ids
    assert far.twin.token_ids == near.twin.token_ids  # type: ignore[attr-defined]
    assert far.distribution().top(3)[0].id == near.distribution().top(3)[0].id


def test_beam_search_over_the_reported_tokens_equals_the_local_one(remote, bundled):
    far = remote.beam_search(PROMPT, num_beams=3, max_new_tokens=5)
    near = bundled.beam_search(PROMPT, num_beams=3, max_new_tokens=5)
    assert [h.token_ids for h in far.sequences] == [h.token_ids for h in near.sequences]


# --- failures ---------------------------------------------------------------------------------------------


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` requests with `status` (and a Retry-After), then passes them on to `target`."""

    failures, status, target, seen = 0, 503, "", 0

    def _relay(self, method: str) -> None:
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(type(self).status)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        answer = httpx.request(
            method,
            type(self).target + self.path,
            content=body or None,
            headers={"content-type": "application/json"},
            timeout=120,
        )
        self.send_response(answer.status_code)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(answer.content)

    def do_GET(self):
        self._relay("GET")

    def do_POST(self):
        self._relay("POST")

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky(served):
    Flaky.target, Flaky.seen = served[0], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.parametrize("status", [429, 500, 503])
def test_a_busy_or_failing_server_is_retried_with_backoff(flaky, status, bundled):
    Flaky.failures, Flaky.status = 3, status
    client = RemoteClient(flaky, backoff=0.01)
    assert client.get("models")["data"][0]["id"] == bundled.name
    assert Flaky.seen == 4  # three refusals, then the answer


def test_a_server_that_keeps_failing_is_one_clear_error(flaky):
    Flaky.failures, Flaky.status = 100, 500
    with pytest.raises(RemoteError, match=r"answered 500") as failed:
        RemoteClient(flaky, retries=2, backoff=0.01).get("models")
    assert "\n" not in str(failed.value) and Flaky.seen == 3


def test_a_server_that_dies_mid_generation_is_one_clear_error(tmp_path):
    with decodelab_serve(tmp_path) as (url, _, process):
        lm = decodelab.load(url + "/v1")
        lm.backend.client.retries, lm.backend.client.backoff = 1, 0.01
        generation = lm.generation(PROMPT, greedy=True, max_new_tokens=30)
        steps = iter(generation)
        next(steps)
        process.kill()
        process.wait()
        with pytest.raises(RemoteError, match="cannot reach .* is the server running there"):
            list(steps)


def test_a_wrong_address_or_model_is_one_clear_error(served):
    with pytest.raises(RemoteError, match="cannot reach"):
        decodelab.load("http://127.0.0.1:9/v1", api_key="unused")
    with pytest.raises(DecodelabError, match="does not serve 'gpt-4o'"):
        decodelab.load(served[0] + "/v1", model="gpt-4o")
    with pytest.raises(DecodelabError, match="quantize applies to a model run here"):
        decodelab.load(served[0] + "/v1", quantize="int8")


def test_more_logprobs_than_the_server_tells_is_one_error_at_load(served):
    with pytest.raises(BadInput) as refused:  # decodelab serve tells at most 20, as vLLM does by default
        decodelab.load(served[0] + "/v1", top_logprobs=21)
    message = str(refused.value)
    assert "refuses to tell 21 logprobs per position" in message and "--top-logprobs N" in message
    assert "\n" not in message and "20" in message  # the server's own words say its limit
    assert decodelab.load(served[0] + "/v1", top_logprobs=20).backend.capabilities.top_logprobs == 20


def test_a_tokenizer_that_is_not_the_servers_is_one_error_at_load(served, bundled, tiny_gpt2_dir):
    """The server's /tokenize reads a probe text (Korean included) as the named tokenizer must."""
    with pytest.raises(BadInput) as refused:
        decodelab.load(served[0] + "/v1", tokenizer=str(tiny_gpt2_dir))  # GPT-2's BPE, not SmolLM2's
    message = str(refused.value)
    assert f"the tokenizer {str(tiny_gpt2_dir)!r} does not read text as this decodelab server does" in message
    assert "pass the served model's own tokenizer with tokenizer= (--tokenizer)" in message and "\n" not in message
    named = decodelab.load(served[0] + "/v1", tokenizer="bundled")  # the same tokenizer by name: it loads
    assert named.tokenizer.encode("한국의 수도는") == bundled.tokenizer.encode("한국의 수도는")


# --- llama.cpp's server ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_llama_cpps_server_greedy_tokens_equal_its_own_greedy_output(bundled, tiny_gpt2_dir):
    from llama_server import llama_server, server_installed

    if not server_installed():
        pytest.skip("llama-cpp-python's server is not installed: run `make bench-anchors`")
    from decodelab.gguf_cache import bundled_gguf_path

    with llama_server(bundled_gguf_path(), model_alias="smollm2") as server:
        lm = decodelab.load(server.url + "/v1", tokenizer="bundled")
        assert lm.backend.capabilities.engine == "llama-cpp-python"
        far = generate_on_server(lm, PROMPT, max_new_tokens=6)  # its prompts are text: the server samples
        own = httpx.post(
            server.url + "/v1/completions",
            timeout=120,
            json={
                "model": server.model,
                "prompt": PROMPT,
                "max_tokens": 6,
                "temperature": 0,
                "repeat_penalty": 1.0,
            },
        ).json()["choices"][0]["text"]
        assert far.text == own
        assert lm.tokenizer.decode(far.token_ids) == own  # each token named by its text, mapped back to its id
        assert far.token_ids[:5] == bundled.generate(PROMPT, greedy=True, max_new_tokens=5).token_ids
        for step in far.steps:  # the server's own logprobs, with its top alternatives
            assert step.raw_top[0].id == step.token_id and step.logprob == pytest.approx(math.log(step.raw_top[0].prob))
        first = lm.generate(PROMPT, greedy=True, max_new_tokens=1)  # one step-by-step step: the same distribution
        assert first.token_ids == far.token_ids[:1]
        # llama.cpp's prompt batch and its generation differ by ~1e-4 (Q8 activations in other shapes)
        assert first.steps[0].logprob == pytest.approx(far.steps[0].logprob, abs=1e-3)
        with pytest.raises(Unsupported, match="echo with logprobs"):
            lm.score("The capital of France is Paris.")
        with pytest.raises(BadInput, match="does not read text as this llama-cpp-python server does"):
            decodelab.load(server.url + "/v1", tokenizer=str(tiny_gpt2_dir))  # checked on /extras/tokenize


# --- the command line, and decodelab serve as a front for a remote engine -----------------------------------


def test_the_command_line_takes_a_server_url(served, bundled):
    url, model, _ = served
    ran = subprocess.run(
        [
            sys.executable,
            "-m",
            "decodelab",
            "generate",
            PROMPT,
            "--model",
            url + "/v1",
            "--greedy",
            "--max-new-tokens",
            "6",
            "--json",
        ],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr
    last = json.loads(ran.stdout.strip().splitlines()[-1])
    assert last["model"] == model and last["mode"]["remote"] == "decodelab" and last["mode"]["exact"] is False
    assert last["token_ids"] == bundled.generate(PROMPT, greedy=True, max_new_tokens=6).token_ids
    refused = subprocess.run(
        [sys.executable, "-m", "decodelab", "generate", PROMPT, "--api-key", "k"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
    )
    assert refused.returncode != 0 and "--api-key applies to a model on a server" in refused.stderr


def test_decodelab_serve_fronts_a_remote_engine(served, bundled, tmp_path):
    url, model, _ = served
    with decodelab_serve(tmp_path, "--model", url + "/v1") as (front, name, _):
        assert name == model
        reply = httpx.post(
            front + "/v1/completions",
            timeout=300,
            json={"model": name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 2},
        )
        choice = reply.json()["choices"][0]
        local = bundled.generate(PROMPT, greedy=True, max_new_tokens=6)
        assert choice["text"] == local.text
        assert choice["logprobs"]["token_logprobs"] == pytest.approx([s.logprob for s in local.steps], abs=CLOSE)
        info = httpx.get(front + "/api/info", timeout=60).json()
        assert info["mode"]["remote"] == "decodelab"


def test_the_readmes_remote_example_runs(served, capsys):
    from pathlib import Path

    from readme_examples import code_blocks

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (example,) = [block for block in code_blocks(readme, "py") if "far = decodelab.load" in block]
    exec(compile(example.replace("http://127.0.0.1:8000", served[0]), "README.md", "exec"), {})
    expected = example.strip().splitlines()[-1].rpartition("# ")[2]  # what the README says it prints
    assert capsys.readouterr().out.strip() == expected


def test_a_remote_distribution_says_what_the_server_did_not_tell(remote, bundled, tmp_path):
    from decodelab.plots import plot_distribution

    far, near = remote.next_token_distribution(PROMPT), bundled.next_token_distribution(PROMPT)
    assert far.reported is not None and int(far.reported.sum()) == 20 and near.reported is None
    assert [c.id for c in far.top(25)] == [c.id for c in near.top(20)]  # the top of what was reported, no more
    assert far.known_mass == pytest.approx(sum(c.prob for c in near.top(20)), abs=CLOSE)
    lowest, highest = far.entropy_bounds
    assert lowest <= near.entropy <= highest  # the true entropy lies within the bounds
    assert "the server reported 20 tokens holding" in far.table() and "the rest is not known" in far.table()
    figure = plot_distribution(far, top=5, path=tmp_path / "remote.png")
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels[-1] == "rest (not known)" and len(labels) == 6
