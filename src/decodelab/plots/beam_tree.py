"""The beam tree as a diagram: every candidate the search weighed, laid out by step, styled by its fate.

Columns are steps (the prompt on the left); each node is a token with its running log-probability, drawn
as a box whose colour says what became of it: kept (a live beam next step), finished (a kept hypothesis)
or pruned. The returned sequences' paths are drawn thick and their last nodes carry ★1, ★2, ...
"""

from __future__ import annotations

import os
from typing import cast

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from decodelab.beam_records import BeamNode, BeamResult, BeamTree
from decodelab.errors import BadInput
from decodelab.plots.figures import check_path, new_figure, save, token_label

STATUS_FILL = {"root": "#eeeeee", "kept": "#c6dbef", "finished": "#a1d99b", "pruned": "#ffffff"}
STATUS_EDGE = {"root": "#555555", "kept": "#3182bd", "finished": "#238b45", "pruned": "#bbbbbb"}
STATUS_TEXT = {"root": "black", "kept": "black", "finished": "black", "pruned": "#999999"}


def plot_beam_tree(
    beam: BeamResult | BeamTree, show_pruned: bool = True, path: str | os.PathLike | None = None
) -> Figure:
    """The search tree, one box per `BeamNode` (pruned ones too unless `show_pruned=False`)."""
    if path is not None:
        check_path(path)
    tree = beam.tree if isinstance(beam, BeamResult) else beam
    if not isinstance(tree, BeamTree) or not tree.nodes:
        raise BadInput(f"plot_beam_tree needs a BeamResult or BeamTree with nodes, got {type(beam).__name__}")
    shown = [node for node in tree.nodes if show_pruned or node.status != "pruned"]
    children: dict[int, list[BeamNode]] = {}
    for node in shown[1:]:  # every node but the root has a parent
        children.setdefault(cast(int, node.parent_id), []).append(node)
    rows = _layout(children)
    on_returned_path = {node.id for node_id in tree.returned for node in tree.path(node_id)}
    steps = max(node.step for node in shown) + 2  # the root's column and one per step
    figure = new_figure(1.0 + 1.35 * steps, 1.2 + 0.3 * max(len(_leaves(children)), 2))
    axes = figure.add_subplot()
    for node in shown[1:]:
        parent = tree.nodes[cast(int, node.parent_id)]
        best = node.id in on_returned_path
        axes.plot(
            [parent.step, node.step],
            [rows[parent.id], rows[node.id]],
            zorder=1,
            color=STATUS_EDGE[node.status],
            linestyle=":" if node.status == "pruned" else "-",
            linewidth=2.5 if best else 0.9,
        )
    for node in shown:
        axes.text(
            node.step,
            rows[node.id],
            _label(tree, node),
            ha="center",
            va="center",
            fontsize=7,
            zorder=2,
            color=STATUS_TEXT[node.status],
            gid=f"beam-node-{node.id}",
            fontweight="bold" if node.id in on_returned_path else "normal",
            bbox=dict(
                boxstyle="round,pad=0.25",
                facecolor=STATUS_FILL[node.status],
                edgecolor=STATUS_EDGE[node.status],
                linestyle=":" if node.status == "pruned" else "-",
            ),
        )
    axes.set_xlim(-1.6, steps - 1.4)
    axes.set_ylim(max(rows.values()) + 0.8, -0.8)  # the best beams on top
    axes.set_xticks(range(-1, steps - 1), labels=["prompt", *(f"step {i}" for i in range(steps - 1))], fontsize=8)
    axes.tick_params(axis="x", length=0)
    axes.set_yticks([])
    axes.spines[:].set_visible(False)
    axes.legend(
        handles=[
            Patch(facecolor=STATUS_FILL[s], edgecolor=STATUS_EDGE[s], label=s) for s in ("kept", "finished", "pruned")
        ],
        loc="upper right",
        fontsize=7,
        frameon=False,
        bbox_to_anchor=(1, 1.08),
        ncols=3,
    )
    axes.set_title(f"beam search tree · search ended: {tree.stop_reason.replace('_', ' ')}", fontsize=10, loc="left")
    return save(figure, path)


def _label(tree: BeamTree, node: BeamNode) -> str:
    if node.parent_id is None:
        return "prompt"
    star = f" ★{tree.returned.index(node.id) + 1}" if node.id in tree.returned else ""
    return f"{token_label(node.piece)}{star}\n{node.cum_logprob:.2f}"


def _leaves(children: dict[int, list[BeamNode]], node_id: int = 0) -> list[int]:
    """Node ids without shown children, depth first, best child first."""
    kids = children.get(node_id, [])
    return [node_id] if not kids else [leaf for kid in kids for leaf in _leaves(children, kid.id)]


def _layout(children: dict[int, list[BeamNode]]) -> dict[int, float]:
    """Row of every node: leaves take consecutive rows; a parent sits midway between its first and last child."""
    rows = {leaf: float(row) for row, leaf in enumerate(_leaves(children))}

    def place(node_id: int) -> float:
        kids = children.get(node_id, [])
        if kids:
            spots = [place(kid.id) for kid in kids]
            rows[node_id] = (spots[0] + spots[-1]) / 2
        return rows[node_id]

    place(0)
    return rows
