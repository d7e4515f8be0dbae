"""The real GPT-2 BPE rebuilt from whisper's rank file, and decodelab's token view on top of it."""

import re

import pytest

import gpt2_bpe
from decodelab.tokenizer import Tokenizer
from decodelab.tokens import tokenize
from gpt2_bpe import gpt2_tokenizer

KOREAN = "안녕하세요, 세계! 😀"

# Ids the Hub's `gpt2` tokenizer gives (quoted in the tutorials this project follows).
GOLDEN = [
    (
        "Udacity is the best place to learn about generative",
        [52, 67, 4355, 318, 262, 1266, 1295, 284, 2193, 546, 1152, 876],
    ),
    ("Transformers are the", [41762, 364, 389, 262]),
]


@pytest.fixture(scope="module")
def hf_tok():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def tok(hf_tok) -> Tokenizer:
    return Tokenizer.from_transformers(hf_tok)


@pytest.mark.parametrize(("text", "ids"), GOLDEN)
def test_ids_match_the_hub_gpt2(hf_tok, text, ids):
    assert hf_tok.encode(text) == ids


def test_round_trip_and_end_of_text(hf_tok):
    assert hf_tok.decode(hf_tok.encode(KOREAN)) == KOREAN
    assert hf_tok.eos_token == "<|endoftext|>"
    assert hf_tok.eos_token_id == 50256
    assert len(hf_tok) == 50257


def test_missing_rank_file_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(gpt2_bpe.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="run `make test`"):
        gpt2_bpe.rank_file()


@pytest.mark.parametrize(("text", "ids"), GOLDEN)
def test_token_view_ids_match(tok, text, ids):
    assert tokenize(tok, text).ids == ids


def test_pieces_have_real_spaces(tok):
    view = tokenize(tok, "Transformers are the")
    assert view.pieces == ["Transform", "ers", " are", " the"]
    assert [view.text[t.start : t.end] for t in view] == view.pieces  # offsets keep the leading space


def _piece_bytes(piece: str) -> bytes:
    """Undo `readable_piece`: `<0xEA>` back to its byte, any other character to its UTF-8."""
    parts = re.split(r"(<0x[0-9A-F]{2}>)", piece)
    return b"".join(bytes([int(part[3:5], 16)]) if part.startswith("<0x") else part.encode() for part in parts)


def test_korean_partial_characters_show_as_hex_bytes(tok):
    view = tokenize(tok, KOREAN)
    assert all("\ufffd" not in piece for piece in view.pieces)
    assert b"".join(t.raw for t in view) == KOREAN.encode()
    partial = [t for t in view if "<0x" in t.piece]
    assert partial, "GPT-2 splits Korean syllables into byte tokens"
    for t in view:
        try:
            assert t.piece == t.raw.decode()  # a whole-character token reads as itself
        except UnicodeDecodeError:
            assert re.search(r"(<0x[0-9A-F]{2}>)+", t.piece), t.piece
            assert _piece_bytes(t.piece) == t.raw  # the hex bytes are exactly the token's bytes
    assert " <0xEC>" in view.pieces  # ' 세' starts with a space token fused to the syllable's first byte


def test_korean_spans_stay_inside_the_text_and_in_order(tok):
    view = tokenize(tok, KOREAN)
    assert all(0 <= t.start < t.end <= len(KOREAN) for t in view)
    assert [t.start for t in view] == sorted(t.start for t in view)
    assert [t.end for t in view] == sorted(t.end for t in view)


def test_end_of_text_in_a_prompt_is_special(tok):
    view = tokenize(tok, "hello<|endoftext|>world")
    assert view.ids == [31373, 50256, 6894]
    assert [t.special for t in view] == [False, True, False]
    assert view.pieces[1] == "<|endoftext|>"
