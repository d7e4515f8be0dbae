"""HTML views of decodelab's records, for Jupyter's `_repr_html_` (pandas tables are in `decodelab.tables`).

Every record's `_repr_html_` calls `views.html`, which dispatches to the function registered here for its type.
The HTML is self-contained — inline styles, no scripts, nothing fetched — so it renders offline, and details
show on hover through `title` attributes. Every piece of user or model text goes through `html.escape`, so a
prompt holding `<script>` shows as text. Tokens are grouped into whole characters by their recorded bytes.

    token_view_html(view)      chips with ids; special tokens marked
    distribution_html(dist)    the top tokens as a table with bars
    result_html(result)        the generated text, each token shaded by its probability, alternatives on hover
    comparison_html(outcomes)  metrics side by side, then each strategy's text
    beam_html(beam)            the returned sequences, then the search tree as nested lists
    score_html(score)          the scored text, each token shaded by its probability
"""

from __future__ import annotations

import codecs
import html
import math
from collections.abc import Sequence
from typing import TypeVar

from decodelab import views
from decodelab.beam_records import BeamNode, BeamResult, BeamTree
from decodelab.compare import METRIC_ROWS, Comparison, Outcome
from decodelab.distribution import Distribution
from decodelab.engine import Generation
from decodelab.records import Result, Step, overruled_note
from decodelab.scoring import Score, ScoredToken
from decodelab.tokens import TokenView, visible

BOX = "font-family:system-ui,sans-serif;font-size:13px;line-height:1.5"
CAPTION = "color:#666;font-size:12px;margin:2px 0 6px"
CELL = "padding:1px 8px;text-align:right"
TEXT_CELL = "padding:1px 8px;text-align:left;font-family:monospace;white-space:pre"
CHIP = (
    "display:inline-block;margin:2px;padding:1px 5px;border:1px solid #bbb;border-radius:4px;"
    "text-align:center;font-family:monospace;vertical-align:top"
)
SPECIAL_CHIP = CHIP + ";border-color:#e6550d;background:#fdd0a2;font-weight:bold"
BAR = "display:inline-block;height:0.8em;background:#3182bd;vertical-align:middle"
OVERRULED = "box-shadow:inset 0 -2px #c62828"  # a token where a stage (a grammar) removed the model's top choice
STATUS_STYLE = {  # beam node status -> its label's style (the plot's colours)
    "root": "font-weight:bold",
    "kept": "background:#c6dbef",
    "finished": "background:#a1d99b;font-weight:bold",
    "pruned": "color:#999",
}
Piece = TypeVar("Piece", Step, ScoredToken)  # a token that carries its bytes


def escape(text: str) -> str:
    """Text safe inside an element or an attribute value: & < > " ' become entities."""
    return html.escape(text, quote=True)


def shade(prob: float) -> str:
    """Background for a token drawn with probability `prob`: red (unlikely) through yellow to green (certain)."""
    prob = 0.0 if math.isnan(prob) else min(max(prob, 0.0), 1.0)
    return f"hsl({round(120 * prob)},75%,82%)"


def _legend(overruled: bool = False) -> str:
    cells = "".join(
        f'<span style="background:{shade(p)};padding:0 6px">{p:.0%}</span>' for p in (0, 0.25, 0.5, 0.75, 1)
    )
    marked = f' · <span style="{OVERRULED}">red line</span>: the model\'s top choice was removed' if overruled else ""
    return (
        f'<div style="{CAPTION}">shade = probability the token was chosen with: {cells}{marked} · hover for details'
        "</div>"
    )


def _box(body: str, caption: str = "") -> str:
    caption_html = f'<div style="{CAPTION}">{caption}</div>' if caption else ""
    return f'<div style="{BOX}">{caption_html}{body}</div>'


@views.html.register(TokenView)
def token_view_html(view: TokenView) -> str:
    """One chip per token: its piece (whitespace visible) over its id; special tokens in orange."""
    chips = []
    for index, token in enumerate(view):
        title = (
            f"#{index} · id {token.id} · bytes {token.raw.hex(' ') or '(none)'} · "
            f"characters [{token.start}, {token.end})" + (" · special token" if token.special else "")
        )
        chips.append(
            f'<span style="{SPECIAL_CHIP if token.special else CHIP}" title="{escape(title)}">'
            f"{escape(visible(token.piece)) or '&nbsp;'}<br>"
            f'<span style="font-size:10px;color:#666;font-weight:normal">{token.id}</span></span>'
        )
    specials = sum(token.special for token in view)
    caption = f"{len(view)} tokens" + (f" · {specials} special (orange)" if specials else "")
    return _box("".join(chips), caption)


@views.html.register(Distribution)
def distribution_html(dist: Distribution, n: int = 10) -> str:
    """The `n` most likely next tokens: rank, id, token, a bar, probability and logprob."""
    candidates = dist.top(n)
    peak = candidates[0].prob or 1.0
    rows = []
    for candidate in candidates:
        width = 100 * candidate.prob / peak
        rows.append(
            f"<tr><td style='{CELL}'>{candidate.rank}</td><td style='{CELL}'>{candidate.id}</td>"
            f"<td style='{TEXT_CELL}'>{escape(visible(candidate.piece))}</td>"
            f"<td style='{CELL};width:12em'><span style='{BAR};width:{width:.1f}%'></span></td>"
            f"<td style='{CELL}'>{candidate.prob:.2%}</td><td style='{CELL}'>{candidate.logprob:.3f}</td></tr>"
        )
    head = "".join(f"<th style='{CELL}'>{name}</th>" for name in ("rank", "id", "token", "", "prob", "logprob"))
    prompt = dist.tokenizer.decode(dist.prompt_ids)
    shown = sum(candidate.prob for candidate in candidates)
    caption = (
        f"next token after “{escape(prompt[-80:])}” · entropy {dist.entropy:.3f} nats · "
        f"top {len(candidates)} hold {shown:.2%}"
    )
    return _box(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>", caption)


def _characters(tokens: Sequence[Piece]) -> list[tuple[str, list[Piece]]]:
    """Tokens (Steps or ScoredTokens) grouped so each group is whole characters: a Korean syllable split
    over three byte tokens shows as the syllable, not as <0xEC><0x84><0x9C>."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    groups: list[tuple[str, list[Piece]]] = []
    text, pending = "", list[Piece]()
    for token in tokens:
        text += decoder.decode(token.bytes)  # the bytes the record carries, never parsed back from its piece
        pending.append(token)
        if not decoder.getstate()[0]:  # no bytes of an unfinished character left over
            groups.append((text, pending))
            text, pending = "", []
    if pending:
        groups.append((text + decoder.decode(b"", final=True), pending))
    return groups


def _step_title(step: Step) -> str:
    title = (
        f"step {step.index} · {visible(step.piece)!r} (id {step.token_id}) · {step.prob:.2%} after the samplers"
        f" · {step.raw_prob:.2%} under the model, rank {step.rank}"
    )
    if step.forced:
        title += " · appended by hand"
    if step.overruled_by is not None and step.raw_top:
        title += " · " + overruled_note(step.overruled_by, step.raw_top[0].piece)
    alternatives = step.choices(5)
    return title + (f"\nmodel's top: {alternatives}" if alternatives else "")


def _token_span(text: str, prob: float, title: str, style: str = "") -> str:
    return (
        f'<span style="background:{shade(prob)};color:#111;border-radius:3px;padding:1px 0;{style}" '
        f'title="{escape(title)}">{escape(text)}</span>'
    )


def steps_html(steps: Sequence[Step]) -> str:
    """Generated text, each token (or group of byte tokens making a character) shaded by its probability; a
    stop token that ended the text is shown framed."""
    spans = []
    for text, group in _characters(steps):
        prob = math.prod(step.prob for step in group)
        title = "\n".join(_step_title(step) for step in group)
        forced = any(step.forced for step in group)
        overruled = any(step.overruled_by for step in group)  # a stage removed the model's own top choice
        if group[-1] is steps[-1] and group[-1].is_stop:
            spans.append(_token_span(f"⏹{visible(text)}", prob, title, "border:1px dashed #555;font-size:11px"))
        else:
            style = ("text-decoration:underline dotted;" if forced else "") + (OVERRULED if overruled else "")
            spans.append(_token_span(text, prob, title, style))
    return f'<div style="white-space:pre-wrap;font-family:monospace;line-height:1.9">{"".join(spans)}</div>'


@views.html.register(Result)
def result_html(result: Result) -> str:
    """The trace of one generation: the text with every token shaded by its probability, details on hover."""
    caption = (
        f"{len(result.steps)} tokens · stopped by {escape(str(result.stop_reason))} · "
        f"log P = {result.logprob:.2f}" + (f" · seed {result.seed}" if result.seed is not None else "")
    )
    overruled = any(step.overruled_by for step in result.steps)
    return _box(steps_html(result.steps) + _legend(overruled), caption)


@views.html.register(Generation)
def generation_html(generation: Generation) -> str:
    """Each row's trace once the generation has run; before that, how to run it."""
    if not generation.results:
        return _box(f"Generation of {generation.n} row(s), not run yet: iterate it or call .run()")
    if len(generation.results) == 1:
        return result_html(generation.results[0])
    return "".join(
        f"<div><b>sample {row}</b>{result_html(result)}</div>" for row, result in enumerate(generation.results)
    )


@views.html.register(Comparison)
def comparison_html(outcomes: Sequence[Outcome]) -> str:
    """A metrics table (one column per strategy), then each strategy's text."""
    head = "".join(f"<th style='{CELL}'>{escape(o.strategy.label)}</th>" for o in outcomes)
    rows = "".join(
        f"<tr><th style='{CELL};text-align:left'>{name}</th>"
        + "".join(f"<td style='{CELL}'>{escape(render(o))}</td>" for o in outcomes)
        + "</tr>"
        for name, render in METRIC_ROWS
    )
    texts = "".join(
        f"<tr><th style='{CELL};text-align:left;vertical-align:top'>{escape(o.strategy.label)}</th>"
        f"<td style='text-align:left;white-space:pre-wrap'>{escape(o.text.strip())}</td></tr>"
        for o in outcomes
    )
    return _box(
        f"<table><thead><tr><th></th>{head}</tr></thead><tbody>{rows}</tbody></table>"
        f"<table style='margin-top:8px'>{texts}</table>",
        f"{len(outcomes)} strategies from one prompt",
    )


def _node_label(tree: BeamTree, node: BeamNode) -> str:
    if node.parent_id is None:
        return f'<span style="{STATUS_STYLE["root"]}">prompt</span>'
    star = f" ★{tree.returned.index(node.id) + 1}" if node.id in tree.returned else ""
    score = f" · score {node.score:.4f}" if node.score is not None else ""
    title = f"logprob {node.logprob:.4f} · rank {node.rank} among the step's candidates{score}"
    note = f" ({node.note})" if node.note else ""
    return (
        f'<span style="{STATUS_STYLE[node.status]};font-family:monospace;padding:0 3px;border-radius:3px" '
        f'title="{escape(title)}">{escape(visible(node.piece))}</span>'
        f'<span style="color:#666;font-size:11px"> {node.cum_logprob:.2f} {node.status}{star}'
        f"{escape(note)}</span>"
    )


@views.html.register(BeamTree)
def beam_tree_html(tree: BeamTree) -> str:
    """The search tree as nested lists; colours as in the plot (kept blue, finished green, pruned grey).
    Hover a token for its logprob and rank."""
    children = tree.children()

    def walk(node: BeamNode) -> str:
        kids = children.get(node.id, [])
        inner = "".join(walk(kid) for kid in kids)
        nested = (
            f'<ul style="list-style:none;margin:0;padding-left:1.4em;border-left:1px dotted #bbb">{inner}</ul>'
            if kids
            else ""
        )
        return f"<li>{_node_label(tree, node)}{nested}</li>"

    return f'<ul style="list-style:none;margin:0;padding:0">{walk(tree.nodes[0])}</ul>'


@views.html.register(BeamResult)
def beam_html(beam: BeamResult) -> str:
    """The returned sequences with their scores, then the whole search tree (collapsible)."""
    rows = "".join(
        f"<tr><td style='{CELL}'>★{rank}</td><td style='{CELL}'>{h.score:.4f}</td>"
        f"<td style='{CELL}'>{h.sum_logprob:.3f}</td><td style='{CELL}'>{len(h.token_ids)}</td>"
        f"<td style='{CELL}'>{escape(str(h.finished_by))}</td>"
        f"<td style='text-align:left;white-space:pre-wrap'>{escape(h.text)}</td></tr>"
        for rank, h in enumerate(beam.sequences, start=1)
    )
    head = "".join(
        f"<th style='{CELL}'>{name}</th>" for name in ("", "score", "sum logprob", "tokens", "finished by", "text")
    )
    tree = beam.tree
    caption = (
        f"beam search, {beam.config.num_beams} beams · search ended: "
        f"{escape(tree.stop_reason.replace('_', ' '))} · {len(tree.nodes) - 1} candidates weighed"
    )
    return _box(
        f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
        f"<details open><summary>search tree</summary>{beam_tree_html(tree)}</details>",
        caption,
    )


@views.html.register(Score)
def score_html(score: Score) -> str:
    """The scored text, each token shaded by its probability; rank, surprisal and entropy on hover."""
    spans = [
        _token_span(
            text,
            math.prod(token.prob for token in group),
            "\n".join(
                f"{visible(token.piece)!r} (id {token.id}) · p {token.prob:.2%} · rank {token.rank} · "
                f"{token.surprisal_bits:.2f} bits · entropy {token.entropy:.2f} nats"
                for token in group
            ),
        )
        for text, group in _characters(score.tokens)
    ]
    caption = (
        f"{len(score.tokens)} tokens scored after {score.prompt_length} of context · "
        f"total logprob {score.total_logprob:.3f} nats · perplexity {score.perplexity:.3f}"
    )
    body = f'<div style="white-space:pre-wrap;font-family:monospace;line-height:1.9">{"".join(spans)}</div>'
    return _box(body + _legend(), caption)
