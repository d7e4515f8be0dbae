"""decodelab's chat rendering and stop detection against transformers, on a HyperCLOVAX-SEED-like tokenizer."""

import re

import pytest

from decodelab.chat import build_messages, detect_stop_ids, render_chat
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import tokenize
from hyperclova_like import SPECIAL_TOKENS, hyperclova_like_tokenizer

MULTI_TURN = [
    {"role": "tool_list", "content": ""},
    {"role": "system", "content": '- AI 언어모델의 이름은 "CLOVA X" 이며 네이버에서 만들었다.'},
    {"role": "user", "content": "안녕? 자기소개 해줘"},
    {"role": "assistant", "content": "안녕하세요! 저는 CLOVA X입니다."},
    {"role": "user", "content": "서울 날씨 알려줘"},
    {
        "role": "assistant",
        "content": "날씨 도구로 확인할게요.",
        "tool_calls": [{"name": "get_weather", "input": {"location": "서울"}}],
    },
    {"role": "tool", "content": '{"result": {"location": "서울", "weather": "맑음", "temperature": 25}}'},
]


@pytest.fixture(scope="module")
def hf_tok():
    return hyperclova_like_tokenizer()


@pytest.fixture(scope="module")
def tok(hf_tok) -> Tokenizer:
    return Tokenizer.from_transformers(hf_tok)


def ids_of(hf_tok, *tokens: str) -> set[int]:
    return {hf_tok.convert_tokens_to_ids(token) for token in tokens}


def test_single_turn_renders_like_transformers(tok, hf_tok):
    messages = build_messages("안녕? 자기소개 해줘", system="You are CLOVA X.")
    expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert render_chat(tok, messages) == expected
    assert expected == (
        "<|im_start|>system\nYou are CLOVA X.<|im_end|>\n"
        "<|im_start|>user\n안녕? 자기소개 해줘<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_multi_turn_with_a_function_call_renders_like_transformers(tok, hf_tok):
    messages = build_messages(MULTI_TURN)
    expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    rendered = render_chat(tok, messages)
    assert rendered == expected
    assert "저는 CLOVA X입니다.<|im_end|><|endofturn|>\n" in rendered  # a finished answer closes the turn
    assert '"location": "서울"}}]<|im_end|><|stop|>\n' in rendered  # tojson keeps Korean unescaped
    assert rendered.endswith("<|im_start|>assistant\n")


def test_without_generation_prompt_renders_like_transformers(tok, hf_tok):
    messages = build_messages(MULTI_TURN[:4])
    expected = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert render_chat(tok, messages, add_generation_prompt=False) == expected
    assert expected.endswith("<|im_end|><|endofturn|>\n")


def test_end_of_turn_markers_stop_generation(tok, hf_tok):
    stops = detect_stop_ids(tok, eos_ids=[hf_tok.convert_tokens_to_ids("<|endoftext|>")])
    assert ids_of(hf_tok, "<|endofturn|>", "<|stop|>", "<|endoftext|>", "<|im_end|>") <= stops
    assert hf_tok.convert_tokens_to_ids("<|im_start|>") not in stops


def test_stop_string_that_is_one_special_token_maps_to_its_id(hf_tok):
    # Without a template nothing names <|stop|>, so only the user's stop string can add it.
    plain = Tokenizer(hf_tok.backend_tokenizer, chat_template=None, named_tokens={"eos_token": "<|endoftext|>"})
    stop_id = hf_tok.convert_tokens_to_ids("<|stop|>")
    assert stop_id not in detect_stop_ids(plain, eos_ids=[])
    assert stop_id in detect_stop_ids(plain, eos_ids=[], stop_strings=["<|stop|>"])


def test_plain_word_stop_string_adds_no_id(tok, hf_tok):
    assert len(hf_tok.encode("Seoul", add_special_tokens=False)) > 1
    assert detect_stop_ids(tok, eos_ids=[], stop_strings=["Seoul"]) == detect_stop_ids(tok, eos_ids=[])


def test_one_token_plain_word_stop_string_adds_no_id(tok, hf_tok):
    assert hf_tok.encode("the", add_special_tokens=False) == [hf_tok.convert_tokens_to_ids("the")]
    assert detect_stop_ids(tok, eos_ids=[], stop_strings=["the"]) == detect_stop_ids(tok, eos_ids=[])


def test_rendered_prompt_marks_exactly_the_control_tokens_special(tok, hf_tok):
    prompt = render_chat(tok, build_messages(MULTI_TURN))
    view = tokenize(tok, prompt, add_special_tokens=False)
    markers = re.findall("|".join(map(re.escape, SPECIAL_TOKENS)), prompt)
    assert [t.piece for t in view if t.special] == markers
    used = ids_of(hf_tok, "<|im_start|>", "<|im_end|>", "<|endofturn|>", "<|stop|>")
    assert {t.id for t in view if t.special} == used
    assert all(t.id not in ids_of(hf_tok, *SPECIAL_TOKENS) for t in view if not t.special)
    assert b"".join(t.raw for t in view) == prompt.encode()
