"""The token view on the bundled model's byte-level BPE: readable pieces, exact bytes, spans, specials."""

import re

import pytest

KOREAN = "안녕하세요, 세계! 오늘은 토큰을 배웁니다 😀"


def test_korean_pieces_are_bytes_never_replacement_chars(bundled):
    view = bundled.tokenize(KOREAN)
    assert all("\ufffd" not in piece for piece in view.pieces)
    assert any(re.fullmatch(r"(<0x[0-9A-F]{2}>)+", piece) for piece in view.pieces)
    assert b"".join(token.raw for token in view) == KOREAN.encode()
    assert bundled.tokenizer.decode(view.ids) == KOREAN


def test_spans_point_into_the_text(bundled):
    text = "Hello world, hello tokens."
    view = bundled.tokenize(text)
    assert [text[t.start : t.end] for t in view] == [t.piece for t in view]
    korean = bundled.tokenize(KOREAN)
    starts = [t.start for t in korean]
    assert starts == sorted(starts) and all(0 <= t.start < t.end <= len(KOREAN) for t in korean)


def test_byte_level_space_marker_is_a_real_space(bundled):
    view = bundled.tokenize("Transformers are the")
    assert view.pieces[-2:] == [" are", " the"]
    assert "Ġ" not in "".join(view.pieces)
    assert "␣are" in view.table() and "␣the" in view.table()


def test_special_tokens_are_marked(bundled):
    view = bundled.tokenize("<|im_start|>user\nHi<|im_end|>")
    assert [t.piece for t in view if t.special] == ["<|im_start|>", "<|im_end|>"]
    assert view[0].id == bundled.tokenizer.token_to_id("<|im_start|>")


def test_chat_view_and_stop_tokens(bundled):
    view = bundled.chat_tokens("Hi there", system="Be brief.")
    assert view.text == bundled.chat_prompt("Hi there", system="Be brief.")
    assert view.text.endswith("<|im_start|>assistant\n")
    assert "Be brief." in view.text and "Hi there" in view.text
    stops = bundled.stop_ids()
    assert bundled.tokenizer.token_to_id("<|im_end|>") in stops
    assert bundled.tokenizer.token_to_id("<|endoftext|>") in stops
    assert bundled.tokenizer.token_to_id("<|im_start|>") not in stops


def test_chat_template_matches_transformers(bundled):
    from transformers import AutoTokenizer

    reference = AutoTokenizer.from_pretrained(bundled.path)
    messages = [
        {"role": "system", "content": "시스템"},
        {"role": "user", "content": "안녕?"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "More"},
    ]
    expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert bundled.chat_prompt(messages) == expected
    assert (
        bundled.chat_tokens(messages).ids
        == reference.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )


@pytest.mark.parametrize("bad", [[], [{"role": "user"}], ["hello"]])
def test_malformed_messages_are_rejected(bundled, bad):
    import decodelab

    with pytest.raises(decodelab.DecodelabError):
        bundled.chat_prompt(bad)
