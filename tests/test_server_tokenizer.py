"""vLLM's tokenizer routes (/tokenize, /detokenize, /tokenizer_info) on the live server: the ids, text and
template are the bundled model's own, every bad request is one 400 naming its field, and lm-evaluation-harness's
`RemoteTokenizer` stands in for the local tokenizer."""

from __future__ import annotations

import httpx
import pytest

from decodelab.chat import build_messages, render_chat
from live_server import live_server

KOREAN = "안녕하세요, 세계!"
TEXTS = ["The capital of France is", KOREAN, "  two spaces, a tab\t and <|im_end|> inside", ""]
CHAT = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": KOREAN}]


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


def ok(reply: httpx.Response) -> dict:
    assert reply.status_code == 200, reply.text
    return reply.json()


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("special", [True, False])
def test_tokenize_gives_the_tokenizers_ids(http, bundled, text, special):
    ids = bundled.tokenizer.encode(text, add_special_tokens=special)
    reply = ok(http.post("/tokenize", json={"prompt": text, "add_special_tokens": special}))
    assert reply == {"count": len(ids), "max_model_len": bundled.context_length, "tokens": ids, "token_strs": None}


def test_tokenize_adds_special_tokens_by_default_and_names_the_tokens_when_asked(http, bundled):
    reply = ok(http.post("/tokenize", json={"prompt": KOREAN, "return_token_strs": True}))
    assert reply["tokens"] == bundled.tokenizer.encode(KOREAN, add_special_tokens=True)
    assert reply["token_strs"] == [bundled.tokenizer.id_to_token(token) for token in reply["tokens"]]


def test_tokenize_takes_the_served_models_name(http, bundled):
    reply = ok(http.post("/tokenize", json={"prompt": "Hi", "model": bundled.name}))
    assert reply["tokens"] == bundled.tokenizer.encode("Hi")


def test_a_chat_is_rendered_through_the_models_template(http, bundled):
    reply = ok(http.post("/tokenize", json={"messages": CHAT}))
    assert reply["tokens"] == bundled.chat_tokens(CHAT).ids
    assert reply["count"] == len(reply["tokens"])


def test_a_chat_without_the_generation_prompt(http, bundled):
    reply = ok(http.post("/tokenize", json={"messages": CHAT, "add_generation_prompt": False}))
    text = render_chat(bundled.tokenizer, build_messages(CHAT), add_generation_prompt=False)
    assert reply["tokens"] == bundled.tokenizer.encode(text, add_special_tokens=False)
    assert reply["tokens"] != bundled.chat_tokens(CHAT).ids


@pytest.mark.parametrize("text", [KOREAN, "The capital of France is", " emoji 🙂 and\nnewline"])
def test_detokenize_gives_back_the_exact_text(http, bundled, text):
    ids = ok(http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}))["tokens"]
    assert ok(http.post("/detokenize", json={"tokens": ids})) == {"prompt": text}


def test_detokenize_keeps_special_tokens(http, bundled):
    ids = bundled.chat_tokens(CHAT).ids
    reply = ok(http.post("/detokenize", json={"tokens": ids, "model": bundled.name}))
    assert reply["prompt"] == bundled.tokenizer.decode(ids) == bundled.chat_prompt(CHAT)
    assert ok(http.post("/detokenize", json={"tokens": []})) == {"prompt": ""}


def test_tokenizer_info_is_the_models(http, bundled):
    info = ok(http.get("/tokenizer_info"))
    named = bundled.tokenizer.named_tokens
    assert (info["bos_token"], info["eos_token"], info["pad_token"]) == (
        named["bos_token"],
        named["eos_token"],
        named["pad_token"],
    )
    assert bundled.tokenizer.encode(info["eos_token"], add_special_tokens=False) == [bundled.eos_ids[0]]
    assert info["chat_template"] == bundled.tokenizer.chat_template
    assert info["model_max_length"] == bundled.context_length
    assert info["added_tokens_decoder"][str(bundled.eos_ids[0])] == info["eos_token"]
    assert isinstance(info["tokenizer_class"], str)


BAD_REQUESTS = [  # path, body, the param named, words of the message
    ("/detokenize", {"tokens": [1, 2, 49152]}, "tokens", "tokens[2] is 49152, outside the vocabulary [0, 49152)"),
    ("/detokenize", {"tokens": [-1]}, "tokens", "tokens[0] is -1, outside the vocabulary"),
    ("/detokenize", {"tokens": [True]}, "tokens.0", "valid integer"),
    ("/detokenize", {"tokens": "1 2 3"}, "tokens", "valid list"),
    ("/detokenize", {}, "tokens", "tokens is required"),
    ("/detokenize", {"tokens": [1], "skip_special_tokens": True}, "skip_special_tokens", "unrecognized"),
    ("/tokenize", {"prompt": 5}, "prompt", "valid string"),
    ("/tokenize", {"prompt": ["a", "b"]}, "prompt", "valid string"),
    ("/tokenize", {"prompt": "a", "add_special_tokens": "yes"}, "add_special_tokens", "valid boolean"),
    ("/tokenize", {"prompt": "a", "return_token_strs": 1}, "return_token_strs", "valid boolean"),
    ("/tokenize", {"prompt": "a", "truncate": 5}, "truncate", "unrecognized request argument 'truncate'"),
    ("/tokenize", {}, "prompt", "send prompt"),
    ("/tokenize", {"prompt": "a", "messages": CHAT}, "messages", "not both"),
    ("/tokenize", {"prompt": "a", "add_generation_prompt": True}, "add_generation_prompt", "messages only"),
    ("/tokenize", {"messages": []}, "messages", "at least one"),
    ("/tokenize", {"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "expected str"),
    ("/tokenize", {"messages": [{"role": "bot", "content": "hi"}]}, "messages.0.role", "'user'"),
    ("/tokenize", {"messages": CHAT, "continue_final_message": True}, "continue_final_message", "not supported"),
    ("/tokenize", {"messages": CHAT, "chat_template": "{{ messages }}"}, "chat_template", "not supported"),
    ("/tokenize", {"messages": CHAT, "chat_template_kwargs": {"x": 1}}, "chat_template_kwargs", "not supported"),
    ("/tokenize", {"messages": CHAT, "tools": [{"type": "function"}]}, "tools.0.function", "required"),
]


@pytest.mark.parametrize(("path", "body", "param", "words"), BAD_REQUESTS)
def test_a_bad_request_is_one_400_naming_its_field(http, path, body, param, words):
    reply = http.post(path, json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert "\n" not in error["message"]
    if words is not None:
        assert words in error["message"]


def test_the_chat_forms_refused_fields_are_taken_when_empty(http, bundled):
    body = {"messages": CHAT, "continue_final_message": False, "chat_template": None, "tools": []}
    assert ok(http.post("/tokenize", json=body))["tokens"] == bundled.chat_tokens(CHAT).ids


@pytest.mark.parametrize(("path", "body"), [("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [1]})])
def test_a_model_not_served_is_a_404(http, bundled, path, body):
    reply = http.post(path, json={**body, "model": "gpt-4o"})
    assert reply.status_code == 404, reply.text
    error = reply.json()["error"]
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "'gpt-4o'" in error["message"] and bundled.name in error["message"]


def test_lm_evals_remote_tokenizer_stands_in_for_the_local_one(server, bundled):
    from lm_eval.utils import RemoteTokenizer, check_remote_tokenizer_support

    base_url = f"{server.url}/v1/completions"  # what lm-eval's local-completions is given
    assert check_remote_tokenizer_support(base_url)
    remote = RemoteTokenizer(base_url, max_retries=1)
    local = bundled.tokenizer
    for text in TEXTS:
        assert remote.encode(text) == local.encode(text, add_special_tokens=False)
        assert remote.decode(local.encode(text)) == text
    assert remote.eos_token_id == bundled.eos_ids[0]
    assert remote.bos_token_id == local.token_to_id(local.named_tokens["bos_token"])
    assert remote.apply_chat_template(CHAT) == bundled.chat_prompt(CHAT)
    assert remote.batch_decode([local.encode(KOREAN), []]) == [KOREAN, ""]


def test_the_root_routes_pass_the_request_guard(bundled):
    with live_server(bundled, api_key="secret", max_prompt_chars=20) as guarded:
        with httpx.Client(base_url=guarded.url, timeout=60) as client:
            assert client.get("/tokenizer_info").status_code == 401
            assert client.post("/tokenize", json={"prompt": "a"}).status_code == 401
            key = {"Authorization": "Bearer secret"}
            assert client.post("/tokenize", json={"prompt": "a"}, headers=key).status_code == 200
            assert client.post("/tokenize", json={"prompt": "a" * 21}, headers=key).status_code == 400
            surrogate = b'{"prompt": "\\ud800"}'
            headers = {**key, "Content-Type": "application/json"}
            assert client.post("/tokenize", content=surrogate, headers=headers).status_code == 400
