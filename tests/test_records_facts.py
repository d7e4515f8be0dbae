"""Records carry the facts their consumers need: a Step's bytes, whether it is a stop token, whether it is special.

Consumers (the OpenAI logprobs, the notebook views, the page's JSON) read these instead of asking the tokenizer
again or parsing the readable piece, which cannot tell a byte-fallback token `<0x41>` (the byte "A") from a
token whose text a model wrote is "<0x41>".
"""

import json

import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

import decodelab.display  # noqa: F401  (registers the HTML views; decodelab.load() does it for notebook users)
from decodelab.decoding import make_step
from decodelab.records import Alternative, Result, Step, StopReason
from decodelab.tinygpt.tokenizer import byte_tokenizer
from decodelab.tokenizer import Tokenizer


def sentencepiece_like() -> Tokenizer:
    """A SentencePiece-style vocabulary with byte fallback: the token `<0x41>` stands for the byte 0x41."""
    vocab = {"<unk>": 0, "<0x41>": 1, "<0xEC>": 2, "a": 3}
    return Tokenizer(HFTokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True)))


def with_model_text() -> tuple[Tokenizer, int]:
    """A byte-level vocabulary that also has "<0x41>" as a token of plain text (six characters)."""
    backend = byte_tokenizer().backend
    backend.add_tokens(["<0x41>"])
    return Tokenizer(backend), backend.token_to_id("<0x41>")


def step_of(tokenizer: Tokenizer, token_id: int, stop_ids=frozenset()) -> Step:
    logits = torch.zeros(tokenizer.vocab_size)
    logits[token_id] = 5.0  # the chosen token is also the most likely alternative
    return make_step(tokenizer, logits, logits, token_id, 0, top_n=2, trace=True, stop_ids=stop_ids)


def test_a_byte_fallback_token_carries_its_byte():
    step = step_of(sentencepiece_like(), 1)
    assert step.piece == "A" and step.bytes == b"A"
    partial = step_of(sentencepiece_like(), 2)
    assert partial.piece == "<0xEC>" and partial.bytes == b"\xec"  # half a character: shown as its byte
    assert partial.raw_top[0] == Alternative(2, "<0xEC>", partial.raw_top[0].prob, b"\xec")


def test_model_text_that_reads_like_a_byte_is_its_own_bytes():
    tokenizer, token_id = with_model_text()
    step = step_of(tokenizer, token_id)
    assert step.piece == "<0x41>" and step.bytes == b"<0x41>"
    assert step.raw_top[0].bytes == b"<0x41>"
    result = Result("<0x41>", [token_id], StopReason("max_new_tokens"), [step])
    assert ">&lt;0x41&gt;</span>" in result._repr_html_()  # shown as written, not as "A"


def test_stop_and_special_tokens_are_marked_and_the_json_is_plain():
    tokenizer = byte_tokenizer()
    stop = step_of(tokenizer, 10, stop_ids=frozenset({10}))
    plain = step_of(tokenizer, 65, stop_ids=frozenset({10}))
    assert stop.is_stop and not plain.is_stop and not stop.special
    data = json.loads(json.dumps(stop.to_dict()))
    assert data["bytes"] == [10] and data["is_stop"] is True and data["special"] is False
    assert data["raw_top"][0]["bytes"] == [10]
    assert {
        "step",
        "id",
        "piece",
        "prob",
        "raw_prob",
        "logprob",
        "rank",
        "entropy",
        "top",
        "raw_top",
        "stages",
        "row",
        "forced",
    } <= set(data)  # the keys the page already reads stay


def test_a_hand_made_step_holds_its_pieces_utf8():
    step = Step(index=0, token_id=1, piece="서", prob=1.0, raw_prob=1.0, logprob=0.0, rank=1, entropy=0.0)
    assert step.bytes == "서".encode() and Alternative(1, " a", 0.5).bytes == b" a"


def test_a_generation_marks_the_stop_token_it_ended_on(bundled):
    result = bundled.generate("Hi", chat=True, greedy=True, max_new_tokens=40)
    assert result.stop_reason.kind == "stop_token"
    assert [step.is_stop for step in result.steps] == [False] * (len(result.steps) - 1) + [True]
    assert result.steps[-1].special  # <|im_end|>
    assert b"".join(step.bytes for step in result.steps[:-1]).decode() == result.text
    for step in result.steps:
        assert step.bytes == bundled.tokenizer.token_bytes(step.token_id)
        assert all(alt.bytes == bundled.tokenizer.token_bytes(alt.id) for alt in step.raw_top)
