"""A generation's trace as a chart: the chosen token's probability and the entropy at every step."""

from __future__ import annotations

import math
import os

from matplotlib.figure import Figure

from decodelab.engine import Generation
from decodelab.errors import BadInput
from decodelab.plots.figures import CHOSEN, check_path, literal, new_figure, save, token_label
from decodelab.records import Result

MAX_LABELS = 48  # more steps than this and only every k-th tick is labelled


def plot_trace(trace: Result | Generation, row: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """Top: each chosen token's probability after the sampler chain (`Step.prob`, solid) and under the model
    (`Step.raw_prob`, dashed). Bottom: the entropy of the model's distribution (`Step.entropy`, nats).
    A `Generation` is run first if it has not been; `row` picks the sample."""
    if path is not None:
        check_path(path)
    result = _result(trace, row)
    steps = result.steps
    if not steps:
        raise BadInput("the result has no steps to plot: generate at least one token")
    x = [step.index for step in steps]
    figure = new_figure(min(20.0, max(6.4, 1.5 + 0.3 * len(steps))), 5.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    top.plot(
        x,
        [step.prob for step in steps],
        "o-",
        color=CHOSEN,
        markersize=4,
        gid="prob",
        label="chosen token, after the sampler chain",
    )
    top.plot(
        x,
        [step.raw_prob for step in steps],
        "s--",
        color="#555555",
        markersize=3,
        linewidth=1,
        gid="raw_prob",
        label="chosen token, under the model",
    )
    forced = [step for step in steps if step.forced]
    if forced:
        top.plot(
            [s.index for s in forced],
            [s.prob for s in forced],
            "x",
            color="black",
            markersize=8,
            gid="forced",
            label="appended by hand",
        )
    top.set_ylim(0, 1.05)
    top.set_ylabel("probability")
    top.legend(loc="lower left", fontsize=8, frameon=False)
    entropies = [step.entropy for step in steps]
    bottom.plot(x, entropies, "o-", color="#3182bd", markersize=3, gid="entropy")
    bottom.fill_between(x, entropies, alpha=0.15, color="#3182bd")
    bottom.set_ylabel("entropy (nats)")
    if all(math.isnan(e) for e in entropies):
        bottom.text(
            0.5,
            0.5,
            "generated with trace=False: no entropy recorded",
            transform=bottom.transAxes,
            ha="center",
            va="center",
            color="#777777",
        )
    every = max(1, math.ceil(len(steps) / MAX_LABELS))
    bottom.set_xticks(
        x[::every],
        labels=[token_label(step.piece) for step in steps[::every]],
        rotation=60,
        ha="right",
        rotation_mode="anchor",
        fontsize=8,
    )
    bottom.set_xlabel("generated token")
    for axes in (top, bottom):
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(axis="y", alpha=0.3)
    top.set_title(
        f"{len(steps)} tokens · stopped by {literal(str(result.stop_reason))} · log P = {result.logprob:.2f}",
        fontsize=10,
    )
    return save(figure, path)


def _result(trace: Result | Generation, row: int) -> Result:
    if isinstance(trace, Result):
        return trace
    if isinstance(trace, Generation):
        results = trace.results or trace.run()
        if not 0 <= row < len(results):
            raise BadInput(f"row must be in [0, {len(results) - 1}] for this generation, got {row!r}")
        return results[row]
    raise BadInput(f"plot_trace needs a Result or a Generation, got {type(trace).__name__}")
