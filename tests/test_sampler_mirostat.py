"""Mirostat 2.0 (llama.cpp semantics): the surprise cut on hand-computed distributions, the update of mu, and
its memory surviving undo, fork and replay exactly."""

from __future__ import annotations

import math
import re

import pytest
import torch

from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.samplers import History, SamplerChain
from decodelab.samplers.stages.mirostat_v2 import MirostatV2
from decodelab.session import Session

HALVES = [0.5, 0.25, 0.125, 0.0625, 0.0625]  # surprises 1, 2, 3, 4, 4 bits


def history(mu: float | None = None) -> History:
    memory = {} if mu is None else {"mirostat_v2": torch.tensor([mu])}
    return History(torch.zeros(1, 0, dtype=torch.long), 0, memory=memory)


def probs_after(stage: MirostatV2, probs: list[float], mu: float | None = None) -> list[float]:
    out = stage(torch.tensor([probs]).log(), history(mu))
    return [round(p, 6) for p in out.softmax(dim=-1)[0].tolist()]


@pytest.mark.parametrize(
    "tau, mu, expected",
    [
        (1.5, None, [0.571429, 0.285714, 0.142857, 0, 0]),  # mu = 2 tau = 3 bits: keep 1, 2, 3 -> / 0.875
        (5.0, None, [0.5, 0.25, 0.125, 0.0625, 0.0625]),  # mu = 10 bits: everything stays
        (5.0, 2.0, [0.666667, 0.333333, 0, 0, 0]),  # a remembered mu of 2 bits: keep 1, 2 -> / 0.75
        (5.0, 0.5, [1, 0, 0, 0, 0]),  # nothing is within 0.5 bits: the top token stays alone
    ],
)
def test_surprise_cut(tau, mu, expected):
    assert probs_after(MirostatV2(tau), HALVES, mu) == expected


def test_mu_moves_by_eta_times_the_surprise_error():
    stage = MirostatV2(1.5, 0.1)
    final = stage(torch.tensor([HALVES]).log(), history())  # kept [0.5, 0.25, 0.125] / 0.875
    mu = stage.remember(None, final, torch.tensor([0]))
    observed = -math.log2(0.5 / 0.875)  # 0.807355 bits: the drawn token's surprise after the cut
    assert mu.tolist() == pytest.approx([3 - 0.1 * (observed - 1.5)], abs=1e-6)  # 3.069265
    assert stage.remember(mu, final, torch.tensor([2])).tolist() == pytest.approx(
        [mu.item() - 0.1 * (-math.log2(0.125 / 0.875) - 1.5)], abs=1e-6
    )


def test_chain_remembers_only_stateful_stages():
    chain = GenerationConfig(mirostat_tau=1.5, top_k=3).chain()
    h = history()
    final = chain(torch.tensor([HALVES]).log(), h)
    memory = chain.remember(h, final, torch.tensor([1]))
    assert list(memory) == ["mirostat_v2"]
    assert SamplerChain(()).remember(h, final, torch.tensor([1])) == {}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"mirostat_tau": -1}, "mirostat_tau must be a number > 0 (bits), got -1"),
        ({"mirostat_tau": 5.0, "mirostat_eta": 2}, "mirostat_eta must be in [0, 1], got 2"),
    ],
)
def test_bad_values_name_the_setting(values, message):
    with pytest.raises(BadInput, match=re.escape(message)):
        GenerationConfig(**values)


def _mu(session: Session) -> float:
    return float(session.memory["mirostat_v2"][0])


def test_memory_survives_undo_fork_and_replay(bundled):
    session = bundled.session("Once upon a time", mirostat_tau=3.0, mirostat_eta=0.3, seed=11)
    mus = []
    for _ in range(6):
        session.step()
        mus.append(_mu(session))
    assert len(set(mus)) > 1  # mu really moves
    twin = session.fork()
    for _ in range(2):  # a fork goes on exactly as the original would
        assert twin.step().token_id == session.step().token_id and _mu(twin) == _mu(session)
    session.undo(5)
    assert _mu(session) == mus[2]  # exactly the memory after the third step
    session.append(" dragon")  # a forced token: the stage did not choose it, its memory stays
    assert _mu(session) == mus[2]
    session.step(), session.step()  # new draws from the restored memory
    replayed = Session.replay(bundled, session.save())
    assert replayed.token_ids == session.token_ids and _mu(replayed) == _mu(session)
    assert [s.prob for s in replayed.steps] == [s.prob for s in session.steps]


def test_generate_equals_stepping_a_session(bundled):
    """The loop and a session make the same draws and keep the same memory."""
    options = dict(mirostat_tau=2.0, mirostat_eta=0.5, seed=5, max_new_tokens=8)
    result = bundled.generate("The weather today", **options)
    session = bundled.session("The weather today", **options)
    steps = [session.step() for _ in result.steps]
    assert [s.token_id for s in steps] == result.token_ids
    assert [s.prob for s in steps] == [s.prob for s in result.steps]
