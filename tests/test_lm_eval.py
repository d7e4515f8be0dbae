"""EleutherAI's lm-evaluation-harness against a live `decodelab serve` subprocess, checked against its own `hf` model.

Two small local tasks are written by the test (YAML + JSONL): a multiple-choice one, scored by loglikelihoods that
`local-completions` asks the server for (`echo`, `logprobs=1`, `max_tokens=1`, four token-id prompts per request,
the tokenizer read through vLLM's `/tokenize`, `/detokenize` and `/tokenizer_info` routes), and a `generate_until`
one with five stop strings. Both run once through the server and once through lm-eval's `hf` model on the very same
converted weights: the loglikelihoods agree within 1e-4, the accuracies are equal, and so are the greedy outputs,
each cut where its document says it should be.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from serve_process import decodelab_serve

BATCH_SIZE = 4  # prompts lm-eval sends in one /v1/completions request
TOLERANCE = 1e-4  # loglikelihoods, served vs transformers, both float32
MAX_GEN_TOKS = 16

# Question, choices, index of the right one: three or four choices, so a batch mixes continuations of several lengths.
QUESTIONS = [
    ("What color is the sky on a clear day?", ["blue", "green", "red"], 0),
    ("How many legs does a dog have?", ["two", "four", "six", "eight"], 1),
    ("What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], 2),
    ("Which animal says moo?", ["a cat", "a cow", "a duck"], 1),
    ("What do bees make?", ["milk", "silk", "honey", "wool"], 2),
    ("What is frozen water called?", ["steam", "ice", "sand"], 1),
    ("Which planet do we live on?", ["Mars", "Venus", "Earth", "Jupiter"], 2),
    ("What is two plus two?", ["three", "four", "five"], 1),
    ("Which season is the coldest?", ["summer", "spring", "winter", "autumn"], 2),
]

# Five stop strings (lm-eval adds the EOS string as a sixth); each prompt's greedy continuation reaches a different
# one first, two of them spanning several tokens. `stop` names it; `answer` is what exact_match compares with.
STOPS = ["\n", ".", "!", " seven", "approximately"]
PROMPTS = [
    {"prompt": "Q: What is the capital of France?\nA:", "stop": ".", "answer": "The capital of France is Paris"},
    {"prompt": "def add(a, b):\n    return", "stop": "\n", "answer": "a + b"},
    {"prompt": "She shouted: Watch out", "stop": "!", "answer": ", watch out"},
    {"prompt": "Count: one, two, three, four", "stop": " seven", "answer": ", five, six,"},
    {"prompt": "Water boils at 100 degrees", "stop": "approximately", "answer": "Celsius"},
]


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No hub, no dataset downloads: lm-eval, datasets and transformers read only what is on disk."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            patch.setenv(name, "1")
        yield


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`decodelab serve` (the bundled model) on a free port; yields its base URL and served model name."""
    with decodelab_serve(tmp_path_factory.mktemp("serve")) as (url, model, _):
        yield url, model


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The two tasks' YAML and JSONL files, as a user of lm-eval would write them (`--include_path`)."""
    import yaml

    directory = tmp_path_factory.mktemp("lm_eval_tasks")
    cache = str(directory / "datasets-cache")  # datasets' Arrow cache stays with the test's files
    choices = directory / "choices.jsonl"
    choices.write_text(
        "".join(
            json.dumps({"question": question, "choices": options, "answer": answer}) + "\n"
            for question, options, answer in QUESTIONS
        )
    )
    until = directory / "until.jsonl"
    until.write_text("".join(json.dumps(prompt) + "\n" for prompt in PROMPTS))
    common = {"dataset_path": "json", "test_split": "test"}
    tasks = {
        "decodelab_choices": {
            **common,
            "dataset_kwargs": {"data_files": {"test": str(choices)}, "cache_dir": cache},
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "choices",
            "doc_to_target": "answer",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
        },
        "decodelab_until": {
            **common,
            "dataset_kwargs": {"data_files": {"test": str(until)}, "cache_dir": cache},
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {
                "until": STOPS,
                "max_gen_toks": MAX_GEN_TOKS,
                "do_sample": False,
                "temperature": 0.0,
            },
            "filter_list": [
                {"name": "stripped", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}
            ],
            "metric_list": [{"metric": "exact_match"}],
        },
    }
    for name, config in tasks.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump({"task": name, **config}, sort_keys=False))
    return directory


def evaluate(model, model_args: dict, task_dir: Path) -> dict:
    """Both tasks through lm-eval's Python API (what `lm_eval --model ... --include_path ... --log_samples` runs)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=["decodelab_choices", "decodelab_until"],
        batch_size=BATCH_SIZE,
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        log_samples=True,
        bootstrap_iters=0,
    )


@pytest.fixture(scope="module")
def reference(task_dir, bundled) -> dict:
    """`--model hf` on the converted weights the server loads (float32, CPU, the same batch size)."""
    model_args = {"pretrained": str(bundled.path), "dtype": "float32", "device": "cpu"}
    return evaluate("hf", model_args, task_dir)


class Exchange:
    """What lm-eval sent to /v1/completions and what came back, one entry per HTTP request."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.answers: list[tuple[int, str]] = []  # status, body


@pytest.fixture(scope="module")
def served(server, task_dir):
    """The same tasks through `local-completions` against the live server; returns its results and the exchange."""
    import requests

    url, name = server
    exchange = Exchange()
    post = requests.post

    def recording_post(address, **kwargs):  # lm-eval's model_call posts with `requests.post(url, json=...)`
        exchange.sent.append(kwargs["json"])
        response = post(address, **kwargs)
        exchange.answers.append((response.status_code, response.text))
        return response

    model_args = {
        "model": name,
        "base_url": url + "/v1/completions",
        "tokenizer_backend": "remote",
        "num_concurrent": 1,
        "max_retries": 1,
        "max_gen_toks": MAX_GEN_TOKS,
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests, "post", recording_post)
        try:
            results = evaluate("local-completions", model_args, task_dir)
        except Exception as error:
            last = exchange.answers[-1] if exchange.answers else "no /v1/completions request was answered"
            raise AssertionError(f"local-completions failed ({error!r}); the server's last answer: {last}") from error
    return results, exchange


def by_doc(results: dict, task: str) -> dict[int, dict]:
    return {sample["doc_id"]: sample for sample in results["samples"][task]}


@pytest.mark.slow
def test_multiple_choice_loglikelihoods_and_accuracies_equal_hf(served, reference):
    results, _ = served
    ours, theirs = by_doc(results, "decodelab_choices"), by_doc(reference, "decodelab_choices")
    assert sorted(ours) == sorted(theirs) == list(range(len(QUESTIONS)))
    mismatches = []  # every choice that differs, not only the first: a pattern says more than one number
    for doc_id, sample in ours.items():
        question, options, _ = QUESTIONS[doc_id]
        pairs = zip(options, sample["filtered_resps"], theirs[doc_id]["filtered_resps"], strict=True)
        for option, (ll, greedy), (hf_ll, hf_greedy) in pairs:
            if abs(ll - hf_ll) > TOLERANCE or bool(greedy) != bool(hf_greedy):
                mismatches.append(f"{question} {option}: served {ll:.6f} {greedy}, hf {hf_ll:.6f} {hf_greedy}")
    assert not mismatches, "loglikelihood, is_greedy differ:\n" + "\n".join(mismatches)
    for doc_id, sample in ours.items():
        assert (sample["acc"], sample["acc_norm"]) == (theirs[doc_id]["acc"], theirs[doc_id]["acc_norm"])
    for metric in ("acc,none", "acc_norm,none"):
        assert results["results"]["decodelab_choices"][metric] == reference["results"]["decodelab_choices"][metric]


@pytest.mark.slow
def test_loglikelihoods_arrive_four_token_id_prompts_per_request(served, server):
    _, exchange = served
    _, name = server
    scoring = [payload for payload in exchange.sent if payload.get("echo")]
    scored = sum(len(options) for _, options, _ in QUESTIONS)  # one loglikelihood per choice
    full, rest = divmod(scored, BATCH_SIZE)
    assert [len(payload["prompt"]) for payload in scoring] == [BATCH_SIZE] * full + ([rest] if rest else [])
    for payload in scoring:
        assert payload["model"] == name and payload["max_tokens"] == 1 and payload["logprobs"] == 1
        assert all(isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) for prompt in payload["prompt"])
    assert all(status == 200 for status, _ in exchange.answers)
    for payload, (_, body) in zip(exchange.sent, exchange.answers):
        assert len(json.loads(body)["choices"]) == len(payload["prompt"])


@pytest.mark.slow
def test_generate_until_stops_where_hf_does(served, reference, server):
    results, exchange = served
    url, name = server
    ours, theirs = by_doc(results, "decodelab_until"), by_doc(reference, "decodelab_until")
    eos = httpx.get(url + "/tokenizer_info").json()["eos_token"]
    generating = [payload for payload in exchange.sent if not payload.get("echo")]
    assert generating and all(payload["stop"] == [*STOPS, eos] for payload in generating)  # six stop strings
    for payload, (_, body) in zip(exchange.sent, exchange.answers):
        if not payload.get("echo"):
            assert all(choice["finish_reason"] == "stop" for choice in json.loads(body)["choices"])
    # The whole greedy continuations, no stop strings: each output is its text up to the stop its document names.
    whole = {"model": name, "prompt": [document["prompt"] for document in PROMPTS], "max_tokens": MAX_GEN_TOKS}
    reply = httpx.post(url + "/v1/completions", json={**whole, "temperature": 0}, timeout=120).json()
    continuations = [choice["text"] for choice in sorted(reply["choices"], key=lambda choice: choice["index"])]
    for doc_id, (document, continuation) in enumerate(zip(PROMPTS, continuations, strict=True)):
        (output,) = ours[doc_id]["resps"][0]
        assert output == theirs[doc_id]["resps"][0][0], document["prompt"]  # greedy: the same text as transformers'
        assert continuation.startswith(output + document["stop"]), (document, output, continuation)
        assert not any(stop in output for stop in STOPS)
    metric = "exact_match,stripped"
    assert results["results"]["decodelab_until"][metric] == reference["results"]["decodelab_until"][metric]
