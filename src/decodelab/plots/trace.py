"""A generation's trace as a chart: the chosen token's probability and the entropy at every step, and under a
constraint the probability the grammar removed."""

from __future__ import annotations

import math
import os

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from decodelab.constraints import ConstraintStage
from decodelab.engine import Generation
from decodelab.errors import BadInput
from decodelab.plots.figures import CHOSEN, check_path, literal, new_figure, save, token_label
from decodelab.records import Result, Step

MAX_LABELS = 48  # more steps than this and only every k-th tick is labelled
REMOVED_MASS = "#fdae6b"  # a step's bar: the probability the constraint removed
FORBADE_TOP = "#a63603"  # ... where that included the model's own top choice


def plot_trace(trace: Result | Generation, row: int = 0, path: str | os.PathLike | None = None) -> Figure:
    """Top: each chosen token's probability after the sampler chain (`Step.prob`, solid) and under the model
    (`Step.raw_prob`, dashed). Bottom: the entropy of the model's distribution (`Step.entropy`, nats).
    Under a constraint, a middle panel's bars are the probability it removed at each step (its
    `StageReport.removed_mass`), dark where it forbade the model's own top choice (`Step.overruled_by`), that
    token written in the bar. A `Generation` is run first if it has not been; `row` picks the sample."""
    if path is not None:
        check_path(path)
    result = _result(trace, row)
    steps = result.steps
    if not steps:
        raise BadInput("the result has no steps to plot: generate at least one token")
    x = [step.index for step in steps]
    constrained = any(report.name == ConstraintStage.name for step in steps for report in step.stages)
    width = min(20.0, max(6.4, 1.5 + 0.3 * len(steps)))
    if constrained:
        figure = new_figure(width, 7.2)
        top, middle, bottom = figure.subplots(3, 1, sharex=True, height_ratios=[3, 2, 2])
        draw_constraint_panel(middle, steps)
    else:
        figure = new_figure(width, 5.2)
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
    top.legend(loc="best", fontsize=8, framealpha=0.9)  # where it covers the fewest points
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
    for axes in figure.axes:
        axes.spines[["top", "right"]].set_visible(False)
        axes.grid(axis="y", alpha=0.3)
    top.set_title(
        f"{len(steps)} tokens · stopped by {literal(str(result.stop_reason))} · log P = {result.logprob:.2f}",
        fontsize=10,
    )
    return save(figure, path)


def draw_constraint_panel(axes: Axes, steps: list[Step]) -> None:
    """One bar per step: the probability the constraint removed there; dark where it forbade the model's top
    choice, whose token is written in the bar (when the steps are few enough to label)."""
    removed = [
        next((report.removed_mass for report in step.stages if report.name == ConstraintStage.name), 0.0)
        for step in steps
    ]
    forbade = [step.overruled_by == ConstraintStage.name for step in steps]
    bars = axes.bar(
        [step.index for step in steps],
        removed,
        width=0.7,
        color=[FORBADE_TOP if top else REMOVED_MASS for top in forbade],
    )
    for step, bar in zip(steps, bars):
        bar.set_gid(f"removed-{step.index}")
    if len(steps) <= MAX_LABELS:
        for step, top in zip(steps, forbade):
            if top and step.raw_top:
                axes.text(
                    step.index,
                    0.03,
                    token_label(step.raw_top[0].piece),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    color="white",
                    gid=f"wanted-{step.index}",
                )
    axes.set_ylim(0, 1.5)  # room above the bars for the legend
    axes.set_yticks([0, 0.5, 1])
    axes.set_ylabel("removed by\nthe constraint")
    legend = [
        Patch(color=REMOVED_MASS, label="probability the constraint removed"),
        Patch(color=FORBADE_TOP, label="... the model's top choice with it (the token it wanted)"),
    ]
    axes.legend(handles=legend, loc="upper left", ncols=2, fontsize=8, frameon=False)


def _result(trace: Result | Generation, row: int) -> Result:
    if isinstance(trace, Result):
        return trace
    if isinstance(trace, Generation):
        results = trace.results or trace.run()
        if not 0 <= row < len(results):
            raise BadInput(f"row must be in [0, {len(results) - 1}] for this generation, got {row!r}")
        return results[row]
    raise BadInput(f"plot_trace needs a Result or a Generation, got {type(trace).__name__}")
