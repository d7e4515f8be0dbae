"""Decoding methods side by side: for one prompt, what greedy, temperature, top-k, top-p and min-p draw from.

Each method is a `GenerationConfig`; its sampler chain runs on the prompt's raw logits exactly as the engine
runs it at the first step, so a bar is the post-chain probability the engine samples from, and the chosen
token is the engine's own pick (argmax, or the seeded draw `lm.generate(prompt, seed=seed, ...)` makes).
Methods are written as for `compare`: "greedy; temperature:0.8; top_k:5; top_p:0.9; min_p:0.1".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import cast

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from decodelab.compare import parse_strategies
from decodelab.decoding import select
from decodelab.distribution import Distribution
from decodelab.errors import BadInput
from decodelab.generation_config import GenerationConfig
from decodelab.plots.figures import (
    CHOSEN,
    check_path,
    draw_bars,
    new_figure,
    prompt_caption,
    save,
    share_scale,
    token_label,
)
from decodelab.samplers import History
from decodelab.tokens import token_piece

DEFAULT_METHODS = "greedy; temperature:0.8; top_k:5; top_p:0.9; min_p:0.1"


@dataclass(frozen=True)
class MethodPanel:
    """One method at the first step: its post-chain distribution and the token it picks."""

    label: str  # the method as written, e.g. "top_p:0.9"
    config: GenerationConfig
    probs: torch.Tensor  # (V,) softmax of the chain's output: what the method draws from
    chosen: int  # the token id it picks
    kept: int  # tokens the chain left possible


@dataclass(frozen=True)
class MethodPanels:
    """The methods' panels over one shared set of tokens (the columns of the heatmap)."""

    ids: list[int]  # the raw top tokens, plus any chosen token outside them; most likely (raw) first
    pieces: list[str]
    panels: list[MethodPanel]

    def probs(self, panel: MethodPanel) -> list[float]:
        """The panel's post-chain probability of each shown token."""
        return [float(panel.probs[i]) for i in self.ids]


def decoding_methods(dist: Distribution, methods: str = DEFAULT_METHODS, top: int = 10, seed: int = 0) -> MethodPanels:
    """Run each method's sampler chain on `dist`'s raw logits and pick its token (seeded draws use `seed`)."""
    raw = dist.logits[None]  # (1, V)
    history = History(torch.tensor([dist.prompt_ids], device=raw.device), len(dist.prompt_ids))
    panels = []
    for strategy in parse_strategies(methods):
        if strategy.kind == "beam":
            raise BadInput(
                f"{strategy.label!r} keeps several sequences, not one next-token distribution: "
                "plot it with plot_beam_tree (or `decodelab plot beam`)"
            )
        config = GenerationConfig(seed=seed, **strategy.options)
        final = config.chain()(raw, history)  # (1, V)
        chosen = int(select(final, config.is_greedy, [seed], position=0)[0])  # the engine's pick at step 0
        panels.append(
            MethodPanel(strategy.label, config, final[0].softmax(dim=-1), chosen, int(torch.isfinite(final[0]).sum()))
        )
    ids = [candidate.id for candidate in dist.top(top)]
    extra = {panel.chosen for panel in panels} - set(ids)
    ids += sorted(extra, key=lambda i: -dist.prob(i))
    return MethodPanels(ids, [token_piece(dist.tokenizer, i) for i in ids], panels)


def plot_methods(
    dist: Distribution,
    methods: str = DEFAULT_METHODS,
    top: int = 10,
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> Figure:
    """One bar panel per method: post-chain probabilities of the top tokens, the picked token in red."""
    if path is not None:
        check_path(path)
    view = decoding_methods(dist, methods, top, seed)
    labels = [token_label(piece) for piece in view.pieces]
    figure = new_figure(3.3 * len(view.panels), 1.6 + 0.3 * len(view.ids))
    for column, panel in enumerate(view.panels):
        axes = figure.add_subplot(1, len(view.panels), column + 1)
        probs = view.probs(panel)
        draw_bars(axes, labels, probs, view.ids.index(panel.chosen), removed=[p == 0 for p in probs])
        rule = "argmax" if panel.config.is_greedy else f"keeps {panel.kept:,}"
        picked = token_label(token_piece(dist.tokenizer, panel.chosen))
        axes.set_title(f"{panel.label}\n{rule} · picks {picked}", fontsize=9)
    share_scale(figure)
    prompt = prompt_caption(dist.tokenizer.decode(dist.prompt_ids))
    figure.suptitle(f"decoding methods after “{prompt}”", fontsize=11)
    return save(figure, path)


def plot_methods_heatmap(
    dist: Distribution,
    methods: str = DEFAULT_METHODS,
    top: int = 10,
    seed: int = 0,
    path: str | os.PathLike | None = None,
) -> Figure:
    """The tutorial's heatmap: methods (rows) x top tokens (columns), each cell a post-chain probability;
    the picked token's cell is outlined in red."""
    if path is not None:
        check_path(path)
    view = decoding_methods(dist, methods, top, seed)
    matrix = [view.probs(panel) for panel in view.panels]  # (methods, tokens)
    figure = new_figure(1.6 + 0.75 * len(view.ids), 1.6 + 0.55 * len(view.panels))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=max(max(row) for row in matrix), aspect="auto")
    axes.set_xticks(
        range(len(view.ids)),
        labels=[token_label(piece) for piece in view.pieces],
        rotation=45,
        ha="right",
        rotation_mode="anchor",
    )
    axes.set_yticks(range(len(view.panels)), labels=[panel.label for panel in view.panels])
    peak = cast(float, image.norm.vmax)  # set from the data by imshow
    for row, (panel, probs) in enumerate(zip(view.panels, matrix)):
        for column, prob in enumerate(probs):
            axes.text(
                column,
                row,
                f"{prob:.0%}" if prob >= 0.005 else "·",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if prob > 0.6 * peak else "black",
            )
        outline = Rectangle(
            (view.ids.index(panel.chosen) - 0.5, row - 0.5),
            1,
            1,
            fill=False,
            edgecolor=CHOSEN,
            linewidth=2.5,
            gid=f"chosen-{row}",
        )
        axes.add_patch(outline)
    figure.colorbar(image, ax=axes, label="probability after the sampler chain", shrink=0.8)
    prompt = prompt_caption(dist.tokenizer.decode(dist.prompt_ids))
    axes.set_title(f"decoding methods after “{prompt}”", fontsize=10)
    return save(figure, path)
