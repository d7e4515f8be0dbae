"""The tiny GPT's pictures show the model's own numbers: embedding rows, attention weights, the loss history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import decodelab
from decodelab.errors import BadInput
from decodelab.tinygpt import TinyGPT, TinyGPTConfig, save_model
from decodelab.tinygpt.plots import attention_figure, embeddings_figure, loss_curve_figure, write_inspection

PROMPT = "def 한"  # "한" is three bytes: seven tokens in all


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> decodelab.LM:
    torch.manual_seed(1)
    model = TinyGPT(TinyGPTConfig(block_size=16, n_layer=2, n_head=3, n_embd=24))
    return decodelab.load(save_model(model, tmp_path_factory.mktemp("tiny") / "checkpoint"))


def test_embedding_panels_are_the_prompt_rows_of_the_embedding_tables(lm):
    figure = embeddings_figure(lm, PROMPT)
    token, position, total = (axes.images[0].get_array() for axes in figure.axes if axes.images)
    ids = list(PROMPT.encode())
    expected_token = lm.model.wte.weight[ids].detach().numpy()  # (T, C)
    expected_position = lm.model.wpe.weight[: len(ids)].detach().numpy()  # (T, C)
    assert token.tolist() == expected_token.tolist()
    assert position.tolist() == expected_position.tolist()
    np.testing.assert_allclose(np.asarray(total), expected_token + expected_position, rtol=1e-6)
    labels = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert labels == ["0: d", "1: e", "2: f", "3: ␣", "4: <0xED>", "5: <0x95>", "6: <0x9C>"]


def test_attention_panels_are_each_heads_weights(lm):
    ids = torch.tensor([list(PROMPT.encode())])
    with torch.no_grad():
        expected = lm.model.attention_maps(ids)[1][0]  # layer 1: (H, T, T)
    figure = attention_figure(lm, PROMPT, layer=1)
    panels = [axes.images[0].get_array() for axes in figure.axes if axes.images]
    assert len(panels) == 3
    for head, panel in enumerate(panels):
        assert panel.tolist() == expected[head].tolist()
        np.testing.assert_allclose(np.asarray(panel).sum(axis=1), 1.0, rtol=1e-6)
    with pytest.raises(BadInput, match=r"layer must be in \[0, 2\), got 2"):
        attention_figure(lm, PROMPT, layer=2)


def test_inspection_writes_one_embeddings_png_and_one_attention_png_per_layer(lm, tmp_path):
    paths = write_inspection(lm, PROMPT, tmp_path / "pictures")
    assert [path.name for path in paths] == ["embeddings.png", "attention-layer-0.png", "attention-layer-1.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in paths)


def test_dollar_signs_in_a_prompt_are_drawn_as_text(lm, tmp_path):
    """'$' would start matplotlib's mathtext: '$\\frac$' raised while drawing."""
    paths = write_inspection(lm, "$\\frac$", tmp_path / "pictures")
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in paths)


def test_loss_curve_draws_the_recorded_losses():
    train_losses = [(step, 5.0 - step / 10) for step in range(1, 21)]
    val_losses = [(10, 4.2, 4.3), (20, 3.3, 3.4)]
    figure = loss_curve_figure(train_losses, val_losses)
    raw, smoothed, validation = figure.axes[0].get_lines()
    assert list(raw.get_xdata()) == list(range(1, 21)) and list(raw.get_ydata()) == [loss for _, loss in train_losses]
    assert smoothed.get_ydata()[0] == pytest.approx(4.9)  # bias-corrected: starts at the first loss, not at 0
    assert list(validation.get_xdata()) == [10, 20] and list(validation.get_ydata()) == [4.2, 3.3]
