"""Next-token probability bars: the most likely tokens after a prompt, the chosen one highlighted."""

from __future__ import annotations

import os

from matplotlib.figure import Figure

from decodelab.distribution import Distribution
from decodelab.errors import BadInput
from decodelab.plots.figures import check_path, draw_bars, new_figure, prompt_caption, save, token_label
from decodelab.tokens import token_piece


def plot_distribution(
    dist: Distribution,
    top: int = 10,
    chosen: int | None = None,
    title: str | None = None,
    path: str | os.PathLike | None = None,
) -> Figure:
    """Bars of the `top` most likely next tokens; `chosen` (a token id, default the most likely) in red.

    A chosen token outside the top is added as one more bar, so the highlight is always visible.
    """
    if path is not None:
        check_path(path)  # a bad suffix fails before any drawing
    ids = [candidate.id for candidate in dist.top(top)]
    chosen = ids[0] if chosen is None else chosen
    if isinstance(chosen, bool) or not isinstance(chosen, int) or not 0 <= chosen < dist.probs.numel():
        raise BadInput(f"chosen must be a token id in [0, {dist.probs.numel() - 1}], got {chosen!r}")
    if chosen not in ids:
        ids.append(chosen)
    labels = [token_label(token_piece(dist.tokenizer, i)) for i in ids]
    probs = [dist.prob(i) for i in ids]
    entropy = f"entropy {dist.entropy:.2f} nats"
    if dist.reported is not None:  # a remote server's top tokens: one bar for the mass it did not tell
        ids = [i for i in ids if bool(dist.reported[i])]
        labels, probs = [token_label(token_piece(dist.tokenizer, i)) for i in ids], [dist.prob(i) for i in ids]
        labels.append("rest (not known)")
        probs.append(1 - dist.known_mass)
        lowest, highest = dist.entropy_bounds
        entropy = (
            f"entropy between {lowest:.2f} and {highest:.2f} nats (the server told its top {int(dist.reported.sum())})"
        )
    figure = new_figure(6.4, 1.2 + 0.32 * len(labels))
    axes = figure.add_subplot()
    draw_bars(axes, labels, probs, ids.index(chosen) if chosen in ids else 0)
    prompt = prompt_caption(dist.tokenizer.decode(dist.prompt_ids))
    axes.set_title(title or f"next token after “{prompt}”\n{entropy}", fontsize=10)
    return save(figure, path)
