"""Beam search's records: the search tree of every expansion weighed (`BeamNode`, `BeamTree`), the live beams
and processor reports of each step (`LiveBeam`, `BeamStep`), and the finished sequences (`BeamHypothesis`,
`BeamResult`). `decodelab.beam` runs the search that fills them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from decodelab import views
from decodelab.records import Alternative, StopReason, overruled_note
from decodelab.samplers import StageReport
from decodelab.tokens import visible

if TYPE_CHECKING:
    import pandas

    from decodelab.beam import BeamConfig


def _overruled_label(overruled: dict[int, tuple[str, Alternative]], node_id: int) -> str:
    if node_id not in overruled:
        return ""
    stage, wanted = overruled[node_id]
    return f"  [{overruled_note(stage, wanted.piece)}]"


@dataclass
class BeamNode:
    """One token in the search tree: the root (the prompt) or one expansion of a live beam at some step."""

    id: int
    parent_id: int | None  # None for the root
    step: int  # index of this generated token (0 = first); -1 for the root
    token_id: int | None  # None for the root
    piece: str  # readable text of the token
    logprob: float  # the token's log-probability after the processors: what the beam score adds
    cum_logprob: float  # sum of logprobs from the root to here (the beam score)
    rank: int  # 0-based rank among the step's K candidates
    status: str  # "root" | "kept" (a live beam next step) | "finished" (a kept hypothesis) | "pruned"
    note: str = ""  # why it was pruned, or how it finished
    score: float | None = None  # length-penalised score, for candidates that ended a hypothesis

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BeamHypothesis:
    """A finished sequence: generated ids (a stop token that ended it included) and its scores."""

    token_ids: list[int]  # generated ids only
    text: str  # decoded generated text, without the stop token
    score: float  # sum_logprob / len(token_ids) ** length_penalty: transformers' sequences_scores
    sum_logprob: float  # log P(token_ids | prompt) under the processed distributions
    # "stop_token" (with its id) | "constraint_complete" (no stop token after it) | "max_new_tokens" | "context_full"
    finished_by: StopReason
    node_id: int  # its last node in the tree; the path to the root spells `token_ids`

    def to_dict(self) -> dict:
        return {
            "token_ids": self.token_ids,
            "text": self.text,
            "score": self.score,
            "sum_logprob": self.sum_logprob,
            "finished_by": self.finished_by.to_dict(),
            "node_id": self.node_id,
        }


@dataclass(frozen=True)
class LiveBeam:
    node_id: int
    token_ids: tuple[int, ...]  # generated so far
    cum_logprob: float

    def to_dict(self) -> dict:
        return {"node_id": self.node_id, "token_ids": list(self.token_ids), "cum_logprob": self.cum_logprob}


@dataclass(frozen=True)
class BeamStep:
    """One step: the beams expanded, the K candidates ranked (with their fate), the hypotheses finished."""

    index: int
    live: tuple[LiveBeam, ...]  # beams expanded at this step, best first (one, the prompt, at step 0)
    candidates: tuple[int, ...]  # node ids of the K best allowed expansions, best first (fewer when fewer allowed)
    finished: tuple[BeamHypothesis, ...]  # hypotheses that entered the num_beams best at this step
    # per live beam: one report per processor (tokens it kept, probability it removed, whether it removed the
    # model's top choice); empty tuples when there are no processors
    stages: tuple[tuple[StageReport, ...], ...] = ()
    model_top: tuple[Alternative, ...] = ()  # per live beam: the model's own most likely next token (before them)

    def overruled(self, beam: int) -> str | None:
        """The processor that removed live beam `beam`'s own top choice at this step (e.g. "constraint"), or None."""
        return next((report.name for report in self.stages[beam] if report.removed_top), None)

    def to_dict(self) -> dict:
        return {
            "index": self.index,
            "live": [beam.to_dict() for beam in self.live],
            "candidates": list(self.candidates),
            "finished": [h.to_dict() for h in self.finished],
            "stages": [[report.to_dict() for report in reports] for reports in self.stages],
            "model_top": [alternative.to_dict() for alternative in self.model_top],
        }


@dataclass
class BeamTree:
    """Every node the search created, per-step records, and why the search ended."""

    nodes: list[BeamNode] = field(default_factory=list)  # nodes[i].id == i; nodes[0] is the root
    steps: list[BeamStep] = field(default_factory=list)
    # | "early_stopping" (True) | "no_better_possible" | "context_full" | "no_live_beams" (every candidate ended
    # before the last step, or none was allowed: under a constraint)
    stop_reason: str = "max_new_tokens"
    returned: list[int] = field(default_factory=list)  # node ids of the returned sequences, best first

    def add(self, **values) -> BeamNode:
        node = BeamNode(id=len(self.nodes), **values)
        self.nodes.append(node)
        return node

    def path(self, node_id: int) -> list[BeamNode]:
        """The nodes from the first generated token down to `node_id` (the root left out)."""
        nodes = []
        parent = self.nodes[node_id].parent_id
        while parent is not None:
            nodes.append(self.nodes[node_id])
            node_id, parent = parent, self.nodes[parent].parent_id
        return nodes[::-1]

    def children(self) -> dict[int, list[BeamNode]]:
        """Parent id -> its children, best first."""
        by_parent: dict[int, list[BeamNode]] = {}
        for node in self.nodes[1:]:
            if node.parent_id is not None:  # every node but the root has one
                by_parent.setdefault(node.parent_id, []).append(node)
        return by_parent

    def overruled(self) -> dict[int, tuple[str, Alternative]]:
        """Node id -> (the processor that removed the model's own top choice where the search expanded that node,
        e.g. "constraint"; the token the model wanted), for each node where one did (the root is node 0)."""
        found = {}
        for step in self.steps:
            for beam, live in enumerate(step.live):
                if (stage := step.overruled(beam)) is not None:
                    found[live.node_id] = (stage, step.model_top[beam])
        return found

    def render(self, max_children: int | None = 4) -> str:
        """An indented text tree; ★n marks the n-th returned sequence. `max_children` children per node at most.
        A node whose expansion a processor overruled says what the model wanted there."""
        children, overruled = self.children(), self.overruled()
        lines = [f"(prompt)  search ended: {self.stop_reason.replace('_', ' ')}{_overruled_label(overruled, 0)}"]

        def walk(node_id: int, indent: str) -> None:
            kids = children.get(node_id, [])
            shown = kids if max_children is None else kids[:max_children]
            for i, node in enumerate(shown):
                last = i == len(shown) - 1 and len(shown) == len(kids)
                label = self._label(node) + _overruled_label(overruled, node.id)
                lines.append(f"{indent}{'└─' if last else '├─'} {label}")
                walk(node.id, indent + ("   " if last else "│  "))
            if len(shown) < len(kids):
                lines.append(f"{indent}└─ … {len(kids) - len(shown)} more")

        walk(0, "")
        return "\n".join(lines)

    def _label(self, node: BeamNode) -> str:
        label = f"{visible(node.piece)!r}  logp {node.logprob:.3f}  sum {node.cum_logprob:.3f}  {node.status}"
        if node.score is not None:
            label += f"  score {node.score:.4f}"
        if node.id in self.returned:
            label += f"  ★{self.returned.index(node.id) + 1}"
        return label + (f"  ({node.note})" if node.note else "")

    def to_dict(self) -> dict:
        return {
            "stop_reason": self.stop_reason,
            "returned": self.returned,
            "nodes": [node.to_dict() for node in self.nodes],
            "steps": [step.to_dict() for step in self.steps],
        }

    def _repr_html_(self) -> str:
        """Jupyter: the tree as nested lists, kept / finished / pruned in colour."""
        return views.html(self)

    def to_pandas(self) -> pandas.DataFrame:
        """One row per node (the index is its id): parent, step, token, logprobs, rank, status (needs pandas)."""
        return views.frame(self)


@dataclass
class BeamResult:
    sequences: list[BeamHypothesis]  # the num_return_sequences best hypotheses, best first
    tree: BeamTree
    config: BeamConfig
    prompt_ids: list[int]
    elapsed: float = 0.0  # seconds, prefill included

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "prompt_tokens": len(self.prompt_ids),
            "elapsed": self.elapsed,
            "sequences": [h.to_dict() for h in self.sequences],
            "tree": self.tree.to_dict(),
        }

    def _repr_html_(self) -> str:
        """Jupyter: the returned sequences with their scores, then the search tree."""
        return views.html(self)
