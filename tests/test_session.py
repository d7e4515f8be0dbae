"""Sessions: step by hand, force tokens, fork, undo, save and replay — all reproducible."""

import json

import pytest
import torch

import decodelab
from decodelab.session import Session


def test_stepping_equals_generate_with_the_same_seed(bundled):
    options = dict(seed=21, temperature=0.8, top_k=50)
    session = bundled.session("Once upon a time", **options)
    stepped = [session.step().token_id for _ in range(10)]
    assert stepped == bundled.generate("Once upon a time", max_new_tokens=10, **options).token_ids
    assert session.token_ids == stepped
    assert session.full_text.startswith("Once upon a time") and session.text in session.full_text


def test_distribution_raw_and_after_samplers(bundled):
    session = bundled.session("The capital of France is", top_k=3, temperature=0.5)
    raw = session.distribution()
    shaped = session.distribution(after_samplers=True)
    torch.testing.assert_close(raw.probs, bundled.next_token_distribution("The capital of France is").probs)
    assert int((shaped.probs > 0).sum()) == 3
    top3 = raw.logits.topk(3)
    torch.testing.assert_close(shaped.probs[top3.indices], (top3.values / 0.5).softmax(-1))


def test_append_forces_a_branch_and_undo_returns(bundled):
    session = bundled.session("The capital of France is", greedy=True)
    before = session.distribution().probs.clone()
    forced = session.append(" London")
    assert forced.forced and forced.piece == " London" and forced.rank > 1
    assert session.text == " London"
    after_london = session.step()
    assert after_london.index == 1
    removed = session.undo(2)
    assert [s.piece for s in removed] == [" London", after_london.piece]
    assert session.token_ids == [] and session.steps == []
    torch.testing.assert_close(session.distribution().probs, before)
    assert session.step().piece == " Paris"


def test_undo_then_step_reproduces_the_uncached_distribution(bundled):
    session = bundled.session("Hello there, my name is", seed=2)
    for _ in range(6):
        session.step()
    session.undo(3)
    fresh = bundled.next_token_distribution(session.prompt_ids + session.token_ids)
    torch.testing.assert_close(session.distribution().probs, fresh.probs, rtol=1e-4, atol=1e-6)


def test_fork_is_independent(bundled):
    session = bundled.session("Once upon a time", seed=8)
    session.step()
    branch = session.fork()
    branch.append(" dragons")
    session.step()
    assert branch.token_ids[0] == session.token_ids[0]
    assert branch.token_ids[1] == bundled.tokenizer.encode(" dragons", add_special_tokens=False)[0]
    assert len(session.steps) == len(branch.steps) == 2 and session.token_ids != branch.token_ids


def test_save_and_replay_reproduce_exactly(bundled):
    session = bundled.session("Once upon a time", seed=99, top_p=0.9)
    session.step()
    session.step()
    session.undo()
    session.append(" there")
    for _ in range(4):
        session.step()
    saved = json.loads(json.dumps(session.save()))
    replayed = Session.replay(bundled, saved)
    assert replayed.token_ids == session.token_ids
    assert [s.prob for s in replayed.steps] == pytest.approx([s.prob for s in session.steps])
    saved["tokens"][-1]["id"] = (saved["tokens"][-1]["id"] + 1) % 1000
    with pytest.raises(decodelab.DecodelabError, match="replay diverged at token 5"):
        Session.replay(bundled, saved)


def test_stop_reason_and_bad_input(bundled):
    session = bundled.session("Hi", chat=True, greedy=True)
    while session.stop_reason is None and len(session.steps) < 40:
        session.step()
    assert session.stop_reason.kind == "stop_token"
    pieces = len(bundled.tokenizer.encode(" unbelievably", add_special_tokens=False))
    with pytest.raises(decodelab.DecodelabError, match=f"is {pieces} tokens, not one"):
        session.append(" unbelievably")
    with pytest.raises(decodelab.DecodelabError, match="token must be an id"):
        session.append(10**9)
    with pytest.raises(decodelab.DecodelabError, match="can undo"):
        session.undo(len(session.steps) + 1)


def test_how_chosen_says_forced_greedy_or_sampled_with_the_draws_seed(bundled):
    from decodelab.decoding import draw_seed

    session = bundled.session("Once upon a time", seed=5, temperature=0.8)
    session.step()
    session.configure(greedy=True)
    session.step()
    session.append(" there")
    sampled, greedy, forced = (session.how_chosen(i) for i in range(3))
    assert sampled.to_dict() == {
        "how": "sampled",
        "draw": 0,
        "seed": draw_seed(5, 0),
        "settings": {"temperature": 0.8},
    }
    assert greedy.how == "greedy" and greedy.draw == 1 and greedy.draw_seed is None
    assert greedy.settings() == {"temperature": 0.8, "greedy": True}
    assert forced.how == "forced" and forced.draw is None and forced.draw_seed is None


def test_redo_after_undo_brings_back_the_same_tokens(bundled):
    session = bundled.session("Once upon a time", seed=3, top_p=0.9)
    for _ in range(3):
        session.step()
    session.append(" dragons")
    session.step()
    made, entries = session.token_ids, session.save()["tokens"]
    session.undo(4)
    for entry in entries[1:]:
        session.redo(entry)
    assert session.token_ids == made
    session.undo(1)
    with pytest.raises(decodelab.DecodelabError, match="chose token .*, not the saved 7"):
        session.redo({**entries[-1], "id": 7})
    assert session.token_ids == made[:-1]  # the diverging step was taken back
