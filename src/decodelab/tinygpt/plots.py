"""Pictures of a tiny GPT: the loss curve of its training, and what happens to a prompt inside it.

- `loss_curve_figure`: training loss per step (raw and smoothed) with the validation loss on top.
- `embeddings_figure`: the tutorial's three panels for a prompt: token embeddings, position embeddings and their
  sum (the first block's input), each a (tokens x width) heatmap.
- `attention_figure`: one layer's attention weights for a prompt, one (query x key) heatmap per head.

Each returns a `matplotlib.figure.Figure` (no pyplot; a PlotFigure, so Jupyter shows it inline); `write_inspection` saves the prompt pictures as PNGs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from decodelab.errors import BadInput
from decodelab.plots.figures import PlotFigure, literal
from decodelab.plots.fonts import setup_matplotlib
from decodelab.tinygpt.model import TinyGPT
from decodelab.tokens import readable_piece, visible

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from decodelab.model import LM

EMBEDDINGS_FILE = "embeddings.png"
ATTENTION_FILE = "attention-layer-{layer}.png"
MAX_LABELLED_TOKENS = 64  # longer prompts get no per-token tick labels (they would overlap)


def loss_curve_figure(train_losses: list[tuple[int, float]], val_losses: list[tuple]) -> Figure:
    """Training loss (nats/byte) per step, smoothed, with validation loss points; rows are (step, loss, ...)."""
    setup_matplotlib()
    figure = PlotFigure(figsize=(7, 4), layout="constrained")
    axes = figure.add_subplot()
    if train_losses:
        steps, losses = zip(*train_losses)
        axes.plot(steps, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per batch)")
        axes.plot(steps, _smoothed(list(losses)), color="tab:blue", label="train (smoothed)")
    if val_losses:
        axes.plot(
            [row[0] for row in val_losses], [row[1] for row in val_losses], "o-", color="tab:orange", label="validation"
        )
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per byte)")
    axes.set_title("tiny GPT training")
    axes.grid(alpha=0.3)
    axes.legend()
    return figure


def embeddings_figure(lm: LM, prompt: str) -> Figure:
    """Token embedding, position embedding and their sum for each token of `prompt`: three (T, C) heatmaps."""
    model = _tiny_model(lm)
    ids = lm.prompt_ids(prompt)
    with torch.no_grad():
        tok_emb, pos_emb, total = model.embeddings(torch.tensor([ids], device=lm.device))  # (1, T, C), (T, C)
    panels = [
        ("token embedding", tok_emb[0]),
        ("position embedding", pos_emb),
        ("sum: the first block's input", total[0]),
    ]
    setup_matplotlib()
    height = 2 + 0.18 * min(len(ids), MAX_LABELLED_TOKENS)
    figure = PlotFigure(figsize=(15, height), layout="constrained")
    labels = _labels(lm, ids)
    for index, (title, matrix) in enumerate(panels):
        axes = figure.add_subplot(1, 3, index + 1)
        values = matrix.detach().float().cpu().numpy()
        limit = float(abs(values).max()) or 1.0
        image = axes.imshow(values, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        axes.set_title(title)
        axes.set_xlabel("embedding dimension")
        _label_rows(axes, labels, "position: token" if index == 0 else "")
        figure.colorbar(image, ax=axes, shrink=0.8)
    figure.suptitle(f"embeddings of {literal(repr(visible(prompt[:60])))}")
    return figure


def attention_figure(lm: LM, prompt: str, layer: int) -> Figure:
    """Layer `layer`'s attention for `prompt`: per head, row t shows how position t weighs positions 0..t."""
    model = _tiny_model(lm)
    if not 0 <= layer < model.config.n_layer:
        raise BadInput(f"layer must be in [0, {model.config.n_layer}), got {layer}")
    ids = lm.prompt_ids(prompt)
    weights = attention_weights(model, ids)[layer]  # (H, T, T)
    setup_matplotlib()
    heads = weights.shape[0]
    side = 3 + 0.12 * min(len(ids), MAX_LABELLED_TOKENS)
    figure = PlotFigure(figsize=(side * heads, side + 0.5), layout="constrained")
    labels = _labels(lm, ids)
    for head in range(heads):
        axes = figure.add_subplot(1, heads, head + 1)
        axes.imshow(weights[head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
        axes.set_title(f"head {head}")
        _label_rows(axes, labels, "query" if head == 0 else "")
        if len(ids) <= MAX_LABELLED_TOKENS:
            axes.set_xticks(range(len(ids)), labels, rotation=90, fontsize=7)
        axes.set_xlabel("key (attended to)")
    figure.suptitle(f"layer {layer} attention for {literal(repr(visible(prompt[:60])))}")
    return figure


def attention_weights(model: TinyGPT, ids: list[int]) -> list[torch.Tensor]:
    """Every layer's attention weights for one prompt, each (H, T, T) float32 on the CPU."""
    with torch.no_grad():
        maps = model.attention_maps(torch.tensor([ids], device=model.wte.weight.device))  # L x (1, H, T, T)
    return [weights[0].detach().float().cpu() for weights in maps]


def write_inspection(lm: LM, prompt: str, out: str | os.PathLike) -> list[Path]:
    """Save the embeddings picture and one attention picture per layer for `prompt` into `out`; return the paths."""
    model = _tiny_model(lm)
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise BadInput(f"{str(out)!r} is a file: give a directory for the pictures")
    try:
        out.mkdir(parents=True, exist_ok=True)
        written = [out / EMBEDDINGS_FILE]
        embeddings_figure(lm, prompt).savefig(written[0], dpi=100)
        for layer in range(model.config.n_layer):
            path = out / ATTENTION_FILE.format(layer=layer)
            attention_figure(lm, prompt, layer).savefig(path, dpi=100)
            written.append(path)
    except OSError as error:
        reason = error.strerror or str(error).strip().splitlines()[0]
        raise BadInput(f"cannot write the pictures into {str(out)!r} ({reason}): choose another directory") from None
    return written


def _tiny_model(lm: LM) -> TinyGPT:
    if not isinstance(lm.model, TinyGPT):
        raise BadInput(f"{lm.name} is not a tiny GPT: these pictures need a checkpoint from `decodelab tiny train`")
    return lm.model


def _labels(lm: LM, ids: list[int]) -> list[str]:
    return [literal(visible(readable_piece(lm.tokenizer.token_bytes(token_id)))) for token_id in ids]


def _label_rows(axes, labels: list[str], title: str) -> None:
    if len(labels) <= MAX_LABELLED_TOKENS:
        axes.set_yticks(range(len(labels)), [f"{i}: {label}" for i, label in enumerate(labels)], fontsize=7)
    axes.set_ylabel(title)


def _smoothed(values: list[float], weight: float = 0.95) -> list[float]:
    """Exponential moving average, bias-corrected so the first points are not pulled toward 0."""
    smoothed, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        smoothed.append(average / (1 - weight**count))
    return smoothed
