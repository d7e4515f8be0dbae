"""What every plot shares: a bare `Figure` (no pyplot, so no GUI backend), token labels, colours, bars, saving.

Plots draw post-chain probabilities as horizontal bars, most likely on top, so token labels read left to
right; the chosen token's bar is `CHOSEN` and the others `OTHER`, which tests read back from the patches.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from decodelab.errors import BadInput
from decodelab.plots.fonts import setup_matplotlib
from decodelab.tokens import visible

CHOSEN = "#d62728"  # the bar of the token a method picks
OTHER = "#9ecae1"  # every other bar
REMOVED = "#bbbbbb"  # label colour of a token the sampler chain removed
SUFFIXES = (".png", ".svg")
LABEL_LENGTH = 14  # longest token label, in characters, before it is cut with '…'


class PlotFigure(Figure):
    """A matplotlib `Figure` that Jupyter shows inline as a PNG, even when pyplot was never imported
    (a bare Figure then shows only as '<Figure size 640x480 with 1 Axes>')."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=100)
        return buffer.getvalue()


def new_figure(width: float, height: float) -> PlotFigure:
    """A figure of `width` x `height` inches with a Hangul-capable font and a white background."""
    setup_matplotlib()
    return PlotFigure(figsize=(width, height), layout="constrained", facecolor="white")


def literal(text: str) -> str:
    """`text` as matplotlib draws it literally: a '$' would otherwise start mathtext ('$5 or $6' in italics,
    '$\\frac$' an error)."""
    return text.replace("$", r"\$")


def token_label(piece: str) -> str:
    """A piece as a tick label: whitespace made visible ('␣the'), long pieces cut, never empty."""
    label = visible(piece) or "∅"
    return literal(label if len(label) <= LABEL_LENGTH else label[: LABEL_LENGTH - 1] + "…")


def prompt_caption(text: str, width: int = 48) -> str:
    """The end of a prompt, on one line, for a title: '…is the capital of'."""
    flat = "".join(char if char == " " else visible(char) for char in " ".join(text.split()))  # no control bytes
    return literal(flat if len(flat) <= width else "…" + flat[-(width - 1) :])


def draw_bars(
    axes: Axes, labels: Sequence[str], probs: Sequence[float], chosen: int | None, removed: Sequence[bool] = ()
) -> None:
    """One horizontal bar per token (first on top) with its percentage; bar `chosen` in `CHOSEN`.

    `removed[i]` greys out label i: the token is still shown, with its 0 %, so panels line up.
    """
    rows = range(len(probs))
    colours = [CHOSEN if row == chosen else OTHER for row in rows]
    bars = axes.barh(list(rows), list(probs), color=colours, edgecolor="none")
    for row, bar in enumerate(bars):
        bar.set_gid(f"bar-{row}")
    axes.set_yticks(list(rows), labels=list(labels))
    for row, tick in enumerate(axes.get_yticklabels()):
        if row < len(removed) and removed[row]:
            tick.set_color(REMOVED)
    axes.invert_yaxis()  # most likely on top
    top = max(probs, default=0.0)
    axes.set_xlim(0, max(top * 1.3, 0.05))
    for row, prob in enumerate(probs):
        axes.annotate(
            f"{prob:.1%}",
            (prob, row),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
            fontweight="bold" if row == chosen else "normal",
        )
    axes.set_xlabel("probability")
    axes.spines[["top", "right"]].set_visible(False)


def share_scale(figure: Figure) -> None:
    """One probability scale for every panel, so their bars compare by length (each panel's widest, +30 %)."""
    right = max(axes.get_xlim()[1] for axes in figure.axes)
    for axes in figure.axes:
        axes.set_xlim(0, right)


def check_path(path: str | os.PathLike) -> Path:
    """`path` if a plot can be written there (.png or .svg, in an existing directory); else one clear error."""
    target = Path(path)
    if target.suffix.lower() not in SUFFIXES:
        raise BadInput(f"plot file must end in .png or .svg, got {str(path)!r}: choose one of those suffixes")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise BadInput(f"cannot write {str(path)!r}: the folder {str(folder)!r} does not exist; create it first")
    if not os.access(folder, os.W_OK):
        raise BadInput(f"cannot write {str(path)!r}: the folder {str(folder)!r} is not writable; choose another path")
    return target


def save(figure: Figure, path: str | os.PathLike | None) -> Figure:
    """Write `figure` to `path` (PNG or SVG by suffix) when one is given; return the figure either way.

    SVG keeps text as text (searchable, and Korean stays Korean), so a viewer renders it with its own fonts.
    """
    if path is None:
        return figure
    target = check_path(path)
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none"}):
        try:
            figure.savefig(target, format=target.suffix.lower()[1:], dpi=150)
        except OSError as error:
            raise BadInput(f"cannot write {str(path)!r}: {error.strerror or error}; choose another path") from None
    return figure
