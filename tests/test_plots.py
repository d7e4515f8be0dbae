"""Plots show what they claim: bar heights are the (post-chain) probabilities, the red bar is the chosen token,
line data are the Step fields, the beam diagram has one styled box per BeamNode; files are real PNG/SVG."""

import math
import warnings

import pytest
import torch
from matplotlib.colors import to_rgba

import decodelab
from decodelab.distribution import Distribution
from decodelab.plots import (
    decoding_methods,
    plot_beam_tree,
    plot_distribution,
    plot_methods,
    plot_methods_heatmap,
    plot_temperatures,
    plot_trace,
)
from decodelab.plots.beam_tree import STATUS_FILL
from decodelab.plots.figures import CHOSEN, OTHER, token_label
from decodelab.samplers import History
from decodelab.tokens import token_piece

PROMPT = "The capital of France is"
PERSON_NAME = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}},
    "required": ["name"],
    "additionalProperties": False,
}


def bars(axes) -> list:
    """The probability bars of one panel, top to bottom."""
    return sorted((p for p in axes.patches if (p.get_gid() or "").startswith("bar-")), key=lambda p: p.get_y())


def labels(axes) -> list[str]:
    return [tick.get_text() for tick in axes.get_yticklabels()]


def red_rows(axes) -> list[int]:
    return [row for row, bar in enumerate(bars(axes)) if bar.get_facecolor() == to_rgba(CHOSEN)]


@pytest.fixture(scope="module")
def dist(bundled) -> Distribution:
    return bundled.next_token_distribution(PROMPT)


def four_token_distribution(bundled, probs=(0.1, 0.2, 0.3, 0.4)) -> Distribution:
    """Ids 300..303 with the given probabilities; every other token impossible."""
    logits = torch.full((bundled.tokenizer.vocab_size,), -math.inf)
    logits[300:304] = torch.log(torch.tensor(probs))
    return Distribution(logits, bundled.tokenizer, bundled.prompt_ids(PROMPT))


def test_distribution_bars_are_the_probabilities_and_the_chosen_token_is_red(bundled, dist):
    top = dist.top(5)
    london = bundled.tokenizer.encode(" London")[0]
    axes = plot_distribution(dist, top=5, chosen=london).axes[0]
    shown = [c.id for c in top] + ([] if london in [c.id for c in top] else [london])
    assert [bar.get_width() for bar in bars(axes)] == pytest.approx([dist.prob(i) for i in shown], abs=1e-7)
    assert labels(axes) == [token_label(token_piece(bundled.tokenizer, i)) for i in shown]
    (red,) = red_rows(axes)
    assert labels(axes)[red] == "␣London"
    assert all(bar.get_facecolor() == to_rgba(OTHER) for row, bar in enumerate(bars(axes)) if row != red)
    assert "The capital of France is" in axes.get_title()


def test_a_chosen_token_outside_the_top_gets_its_own_bar(bundled, dist):
    rare = int(dist.probs.argmin())
    axes = plot_distribution(dist, top=3, chosen=rare).axes[0]
    assert len(bars(axes)) == 4 and red_rows(axes) == [3]
    assert bars(axes)[3].get_width() == pytest.approx(dist.prob(rare))
    with pytest.raises(decodelab.DecodelabError, match="chosen must be a token id"):
        plot_distribution(dist, chosen=10**9)


@pytest.mark.parametrize(
    "method, expected",  # the style guide's hand-computed table: probs [0.1, 0.2, 0.3, 0.4]
    [
        ("greedy", [0.4, 0.3, 0.2, 0.1]),
        ("top_k:2", [0.571429, 0.428571, 0, 0]),
        ("top_p:0.7", [0.571429, 0.428571, 0, 0]),
        ("min_p:0.5", [0.571429, 0.428571, 0, 0]),
        ("temperature:0.5", [16 / 30, 9 / 30, 4 / 30, 1 / 30]),  # p**2, renormalised
    ],
)
def test_method_panels_are_hand_computed_post_chain_probabilities(bundled, method, expected):
    four = four_token_distribution(bundled)
    axes = plot_methods(four, method, top=4).axes[0]
    assert [bar.get_width() for bar in bars(axes)] == pytest.approx(expected, abs=1e-6)
    if method == "greedy":
        assert red_rows(axes) == [0]


def test_method_panels_are_what_the_engine_draws_from_and_picks(bundled, dist):
    methods = "greedy; temperature:1.5; top_k:5; top_p:0.9; min_p:0.05"
    figure = plot_methods(dist, methods, top=8, seed=4)
    view = decoding_methods(dist, methods, top=8, seed=4)
    history = History(torch.tensor([dist.prompt_ids]), len(dist.prompt_ids))
    assert len(figure.axes) == 5
    for axes, panel in zip(figure.axes, view.panels):
        chain = panel.config.chain()(dist.logits[None], history)[0].softmax(-1)
        assert [bar.get_width() for bar in bars(axes)] == pytest.approx([float(chain[i]) for i in view.ids], abs=1e-7)
        # The engine, from the same prompt and seed, picks the highlighted token and records the same probability.
        step = bundled.generate(PROMPT, config=panel.config.with_(max_new_tokens=1)).steps[0]
        assert step.token_id == panel.chosen
        (red,) = red_rows(axes)
        assert view.ids[red] == panel.chosen
        assert bars(axes)[red].get_width() == pytest.approx(step.prob, abs=1e-5)
    assert view.panels[0].kept == dist.probs.numel() and view.panels[2].kept == 5


def test_heatmap_cells_are_the_panels_and_the_chosen_cells_are_outlined(dist):
    methods = "greedy; top_k:3; top_p:0.5"
    figure = plot_methods_heatmap(dist, methods, top=6)
    view = decoding_methods(dist, methods, top=6)
    axes = figure.axes[0]
    cells = axes.images[0].get_array()
    assert cells.shape == (3, len(view.ids))
    for row, panel in zip(cells.tolist(), view.panels):
        assert row == pytest.approx(view.probs(panel))
    outlines = sorted((p for p in axes.patches if (p.get_gid() or "").startswith("chosen-")), key=lambda p: p.get_y())
    assert [round(p.get_x() + 0.5) for p in outlines] == [view.ids.index(panel.chosen) for panel in view.panels]
    assert [t.get_text() for t in axes.get_yticklabels()] == ["greedy", "top_k:3", "top_p:0.5"]


def test_beam_is_not_a_method(dist):
    with pytest.raises(decodelab.DecodelabError, match="plot_beam_tree"):
        plot_methods(dist, "greedy; beam:3")


def test_temperature_panels_are_softmax_of_logits_over_t(dist):
    figure = plot_temperatures(dist, (0.5, 1.0, 2.0), top=6)
    ids = [c.id for c in dist.top(6)]
    for axes, t in zip(figure.axes, (0.5, 1.0, 2.0)):
        expected = torch.softmax(dist.logits / t, dim=-1)[ids]
        assert [bar.get_width() for bar in bars(axes)] == pytest.approx(expected.tolist(), abs=1e-7)
        assert axes.get_title().startswith(f"T = {t:g}")
    assert bars(figure.axes[0])[0].get_width() > bars(figure.axes[2])[0].get_width()  # colder is sharper
    assert len({axes.get_xlim() for axes in figure.axes}) == 1  # one scale: bar lengths compare across panels
    with pytest.raises(decodelab.DecodelabError, match="temperature must be at least 0.0001"):
        plot_temperatures(dist, (0, 1))


def test_trace_lines_are_the_steps(bundled):
    generation = bundled.generation("Once upon a time", top_p=0.9, seed=2, max_new_tokens=8)
    figure = plot_trace(generation)  # runs the generation
    steps = generation.results[0].steps
    lines = {line.get_gid(): line for axes in figure.axes for line in axes.get_lines()}
    assert list(lines["prob"].get_ydata()) == [s.prob for s in steps]
    assert list(lines["raw_prob"].get_ydata()) == [s.raw_prob for s in steps]
    assert list(lines["entropy"].get_ydata()) == [s.entropy for s in steps]
    assert list(lines["prob"].get_xdata()) == list(range(len(steps)))
    ticks = [t.get_text() for t in figure.axes[1].get_xticklabels()]
    assert ticks == [token_label(s.piece) for s in steps]


@pytest.fixture(scope="module")
def beams(bundled):
    return bundled.beam_search(PROMPT, num_beams=2, max_new_tokens=4, num_return_sequences=2)


def node_boxes(figure) -> dict[int, object]:
    return {
        int(t.get_gid().rsplit("-", 1)[1]): t
        for t in figure.axes[0].texts
        if (t.get_gid() or "").startswith("beam-node-")
    }


def test_beam_diagram_has_one_box_per_node_styled_by_its_fate(beams):
    tree = beams.tree
    boxes = node_boxes(plot_beam_tree(beams))
    assert sorted(boxes) == [node.id for node in tree.nodes]
    for node in tree.nodes:
        assert boxes[node.id].get_bbox_patch().get_facecolor() == to_rgba(STATUS_FILL[node.status])
    assert {node.status for node in tree.nodes} >= {"root", "kept", "pruned", "finished"}
    for rank, node_id in enumerate(tree.returned, start=1):
        assert f"★{rank}" in boxes[node_id].get_text()
    kept_only = node_boxes(plot_beam_tree(tree, show_pruned=False))
    assert sorted(kept_only) == [node.id for node in tree.nodes if node.status != "pruned"]


def test_files_are_png_or_svg_and_korean_text_renders(bundled, tmp_path):
    korean = bundled.next_token_distribution("서울은 한국의 수도이고\n부산은")
    figure = plot_distribution(korean, top=12, path=tmp_path / "ko.svg")
    svg = (tmp_path / "ko.svg").read_text(encoding="utf-8")
    assert svg.lstrip().startswith("<?xml") and "부산은" in svg  # text stays text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for a missing glyph
        figure.axes[0].set_xlabel("확률 ↵ ␣ ⇥")
        figure.savefig(tmp_path / "ko.png")
    assert (tmp_path / "ko.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n"  # how Jupyter shows it without pyplot


def test_dollar_signs_and_control_bytes_are_drawn_as_text(bundled, tmp_path):
    """'$' would start matplotlib's mathtext (an error for '$\\frac$'); control bytes would draw as boxes."""
    dist = bundled.next_token_distribution("pay $\\frac$ or $5\x11 now")
    figure = plot_distribution(dist, top=3, path=tmp_path / "dollars.svg")
    title = figure.axes[0].get_title()
    assert "\\$" in title and "<0x11>" in title
    figure.savefig(tmp_path / "dollars.png")  # would raise ValueError if '$\\frac$' were parsed as math
    assert "pay $\\frac$ or $5&lt;0x11&gt; now" in (tmp_path / "dollars.svg").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "name, message",
    [
        ("bars.jpg", "plot file must end in .png or .svg, got '.*bars.jpg'"),
        ("missing/bars.png", "the folder '.*missing' does not exist"),
    ],
)
def test_bad_paths_are_one_clear_error(dist, tmp_path, name, message):
    with pytest.raises(decodelab.DecodelabError, match=message):
        plot_distribution(dist, path=tmp_path / name)


def test_cli_writes_each_kind_and_fails_in_one_line(bundled, tmp_path, monkeypatch, capsys):
    from decodelab.cli import main

    monkeypatch.setattr("decodelab.cli.plot.load_model", lambda args: bundled)
    for argv, name in [
        (["next", PROMPT, "--top", "5"], "next.png"),
        (["methods", PROMPT, "--heatmap"], "methods.svg"),
        (["temperature", PROMPT, "--temperatures", "0.7,1.3"], "temperature.png"),
        (["trace", "Once upon a time", "--greedy", "--max-new-tokens", "4"], "trace.svg"),
        (["beam", PROMPT, "--num-beams", "2", "--max-new-tokens", "3"], "beam.png"),
    ]:
        out = tmp_path / name
        assert main(["plot", *argv, "--out", str(out)]) == 0
        assert out.stat().st_size > 1000
        assert capsys.readouterr().out.strip() == f"wrote {out}"
    assert main(["plot", "next", PROMPT, "--out", str(tmp_path / "bars.gif")]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "must end in .png or .svg, got" in error and "bars.gif" in error


def test_a_constrained_trace_shows_the_mass_the_constraint_removed(bundled):
    from decodelab.plots.trace import FORBADE_TOP, REMOVED_MASS

    result = bundled.generate("A person as JSON:", json_schema=PERSON_NAME, greedy=True, max_new_tokens=30)
    figure = plot_trace(result)
    assert len(figure.axes) == 3  # probability, the constraint's panel, entropy
    panel = figure.axes[1]
    removed = sorted((p for p in panel.patches if (p.get_gid() or "").startswith("removed-")), key=lambda p: p.get_x())
    assert [bar.get_height() for bar in removed] == pytest.approx([s.stages[0].removed_mass for s in result.steps])
    forbade = [s.overruled_by == "constraint" for s in result.steps]
    assert any(forbade) and not all(forbade)
    colours = [to_rgba(FORBADE_TOP if f else REMOVED_MASS) for f in forbade]
    assert [bar.get_facecolor() for bar in removed] == colours
    wanted = {t.get_gid(): t.get_text() for t in panel.texts if (t.get_gid() or "").startswith("wanted-")}
    assert wanted == {f"wanted-{s.index}": token_label(s.raw_top[0].piece) for s in result.steps if s.overruled_by}
    legend = [t.get_text() for t in panel.get_legend().get_texts()]
    assert legend == ["probability the constraint removed", "... the model's top choice with it (the token it wanted)"]
    ticks = [t.get_text() for t in figure.axes[2].get_xticklabels()]
    assert ticks == [token_label(s.piece) for s in result.steps]


def test_an_unconstrained_trace_keeps_its_two_panels(bundled):
    assert len(plot_trace(bundled.generate(PROMPT, greedy=True, max_new_tokens=3)).axes) == 2


def test_a_constrained_korean_trace_renders_every_glyph(bundled, tmp_path):
    result = bundled.generate("서울은 한국의 수도입니까? 답:", choice=[" 네", " 아니요"], temperature=1.0, seed=1)
    figure = plot_trace(result)
    figure.axes[1].set_title("제약이 제거한 확률")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a glyph missing from the fonts is a warning
        figure.savefig(tmp_path / "ko.png")
