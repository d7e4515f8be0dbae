"""How temperature reshapes one distribution: softmax(logits / T) of the same tokens for several T."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from matplotlib.figure import Figure

from decodelab.distribution import Distribution
from decodelab.plots.figures import (
    check_path,
    draw_bars,
    new_figure,
    prompt_caption,
    save,
    share_scale,
    token_label,
)
from decodelab.samplers import History, Temperature
from decodelab.tokens import token_piece


def tempered(dist: Distribution, temperature: float) -> torch.Tensor:
    """softmax(logits / T) over the whole vocabulary (V,), through the engine's own `Temperature` stage."""
    history = History(torch.tensor([dist.prompt_ids], device=dist.logits.device), len(dist.prompt_ids))
    return Temperature(temperature)(dist.logits[None], history)[0].softmax(dim=-1)


def plot_temperatures(
    dist: Distribution,
    temperatures: Sequence[float] = (0.5, 1.0, 2.0),
    top: int = 10,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One panel per temperature over the same `top` tokens (the model's most likely), with each entropy.

    T < 1 sharpens the distribution (the top token takes more), T > 1 flattens it (the tail gains).
    """
    if path is not None:
        check_path(path)
    shaped = [tempered(dist, t) for t in temperatures]  # validates each T before drawing
    ids = [candidate.id for candidate in dist.top(top)]
    labels = [token_label(token_piece(dist.tokenizer, i)) for i in ids]
    figure = new_figure(3.3 * len(shaped), 1.6 + 0.3 * len(ids))
    for column, (t, probs) in enumerate(zip(temperatures, shaped)):
        axes = figure.add_subplot(1, len(shaped), column + 1)
        draw_bars(axes, labels, [float(probs[i]) for i in ids], chosen=None)
        entropy = float(-torch.special.xlogy(probs, probs).sum())
        shown = float(probs[ids].sum())
        axes.set_title(f"T = {t:g}\nentropy {entropy:.2f} nats · top {len(ids)} hold {shown:.0%}", fontsize=9)
    share_scale(figure)
    prompt = prompt_caption(dist.tokenizer.decode(dist.prompt_ids))
    figure.suptitle(f"temperature reshapes the next token after “{prompt}”", fontsize=11)
    return save(figure, path)
