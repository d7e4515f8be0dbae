"""The explorer's learner views (static/views.js), driven in Debian's Chromium through Playwright, on a desktop
(1280x900) and a phone (390x844) viewport.

- The per-step chart has one point per step, and each point is the step record's probability (after the chain
  and raw) and entropy, drawn where the axis puts that value; it follows every state (generate, undo).
- "Compare methods from here": the greedy column is the library's own greedy generation from the position.
- "Beam tree from here": the highlighted best beam is the library's beam search from the position, and the tree
  holds every node the search ranked, with its fate.
- A reply for a session that is no longer the page's is dropped; the buttons are off while a request runs.
- The views fit the phone's width (their wide drawings scroll inside their boxes), and Korean reads as Hangul.

Screenshots go to artifacts/screenshots ($DECODELAB_ARTIFACTS, see tests/browser.py; git ignores it).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect

from browser import ARTIFACTS, BROWSER_MARKS, VIEWPORTS, chromium, give_back_session

WAIT_MS = 180_000  # a loaded 2-core machine: wait on the page, never on a clock
HANGUL = re.compile(r"[\uac00-\ud7a3]")

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(module_server):
    """This module's own server (see conftest's `module_server`)."""
    return module_server


@pytest.fixture(scope="module")
def browser():
    expect.set_options(timeout=WAIT_MS)
    with chromium() as launched:
        yield launched
    expect.set_options(timeout=5_000)  # Playwright's default, for the other browser tests


@pytest.fixture(scope="module")
def artifacts() -> Path:
    directory = ARTIFACTS / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture(params=list(VIEWPORTS))
def page(browser, request):
    context = browser.new_context(viewport=VIEWPORTS[request.param])  # fresh localStorage per test
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.viewport_name = request.param
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    give_back_session(page)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def start(page, url: str, prompt: str) -> None:
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    page.fill("#prompt", prompt)
    page.click("#start")
    settle(page)
    expect(page.locator("#lv-compare")).to_be_enabled()


def settle(page) -> None:
    """Wait until the page's and the views' requests have been answered and rendered."""
    expect(page.locator("body")).to_have_attribute("data-busy", "0")
    expect(page.locator("#learner-views")).to_have_attribute("data-busy", "0")


def greedy_steps(page, count: int) -> None:
    page.check("#greedy")
    page.fill("#generate-count", str(count))
    page.click("#generate")
    settle(page)


def state(page) -> dict:
    return page.evaluate("decodelab.page.state")


def position(page) -> list[int]:
    """The ids of the current position: the prompt's and every generated step's."""
    current = state(page)
    return current["prompt"]["ids"] + [step["id"] for step in current["steps"]]


def answered(page, which: str, bundled=None) -> None:
    """The view's request was answered without an error. The routes may have taken the position as its text
    (the status line says so): the text must then tokenize back to the same ids, or the comparison with the
    library below would be about another prompt."""
    line = page.locator(f"#lv-{which}-status")
    assert "lv-error" not in (line.get_attribute("class") or ""), line.text_content()
    if bundled is not None and "sent as text" in line.text_content():
        assert bundled.prompt_ids(state(page)["full_text"]) == position(page)


def chart_points(page, kind: str) -> list[dict]:
    return page.eval_on_selector_all(
        f"#lv-chart .lv-point.lv-{kind}",
        "points => points.map(p => ({step: Number(p.dataset.step), value: Number(p.dataset.value),"
        " y: Number(p.getAttribute('cy'))}))",
    )


def fits_viewport(page) -> None:
    """Nothing in the learner views reaches past the viewport's right edge, but inside a box that scrolls."""
    width = page.viewport_size["width"]
    outside = page.evaluate(
        """width => [...document.querySelectorAll('#learner-views *')]
            .filter(e => !e.closest('.lv-scroll > *') && e.getBoundingClientRect().right > width + 0.5)
            .map(e => `${e.tagName}#${e.id}.${e.getAttribute('class')}`)""",
        width,
    )
    assert outside == []
    for box in page.locator("#learner-views .lv-scroll").all():
        assert box.evaluate("b => b.getBoundingClientRect().right") <= width + 0.5


def test_chart_has_one_point_per_step_with_the_records_values(server, page, artifacts):
    start(page, server.url, "The capital of France is")
    expect(page.locator("#lv-chart .lv-point")).to_have_count(0)
    page.fill("#generate-count", "7")
    page.click("#generate")
    settle(page)
    steps = state(page)["steps"]
    assert 1 <= len(steps) <= 7
    expect(page.locator("#lv-chart .lv-point.lv-chain")).to_have_count(len(steps))
    grid = sorted(
        page.eval_on_selector_all("#lv-chart .lv-grid", "lines => lines.map(l => Number(l.getAttribute('y1')))")
    )
    top, bottom = grid[0], grid[-1]  # the 100% and 0% lines
    for kind, field in [("chain", "prob"), ("raw", "raw_prob"), ("entropy", "entropy")]:
        points = chart_points(page, kind)
        assert [point["step"] for point in points] == list(range(len(steps)))
        assert [point["value"] for point in points] == [step[field] for step in steps]
        if kind != "entropy":  # drawn at the value: 100% on the top line, 0% on the bottom one
            for point in points:
                assert point["y"] == pytest.approx(top + (1 - point["value"]) * (bottom - top), abs=0.01)
    # A tap on a step shows its token and numbers.
    page.locator("#lv-chart .lv-band").nth(0).click()
    info = page.locator("#lv-chart-info")
    expect(info).to_have_attribute("data-step", "0")
    assert f"rank {steps[0]['rank']}" in info.text_content() and "entropy" in info.text_content()
    fits_viewport(page)
    page.locator("#learner-views").screenshot(path=artifacts / f"views-chart-{page.viewport_name}.png")

    page.click("#undo")  # the chart follows every state
    settle(page)
    expect(page.locator("#lv-chart .lv-point.lv-chain")).to_have_count(len(steps) - 1)


def test_compare_greedy_is_the_librarys_greedy_generation(server, page, bundled, artifacts):
    start(page, server.url, "The capital of France is")
    greedy_steps(page, 3)
    page.fill("#lv-compare-n", "8")
    page.click("#lv-compare")
    settle(page)
    answered(page, "compare", bundled)
    cells = page.locator("#lv-compare-box td.lv-text")
    strategies = [cell.get_attribute("data-strategy") for cell in cells.all()]
    assert strategies[:2] == ["greedy", "beam:4"]
    shown = json.loads(page.locator('#lv-compare-box td.lv-text[data-strategy="greedy"]').get_attribute("data-ids"))
    expected = bundled.generate(position(page), greedy=True, max_new_tokens=8)
    assert shown == expected.token_ids
    fits_viewport(page)
    page.locator("#learner-views").screenshot(path=artifacts / f"views-compare-{page.viewport_name}.png")


def test_compare_samples_with_the_pages_seed(server, page, bundled):
    from decodelab.compare import compare, parse_strategies

    start(page, server.url, "The capital of France is")
    page.fill("#seed", "7")
    page.fill("#lv-compare-n", "6")
    page.click("#lv-compare")
    settle(page)
    answered(page, "compare", bundled)
    expect(page.locator("#lv-compare-status")).to_contain_text("sampled with seed 7")
    cell = page.locator('#lv-compare-box td.lv-text[data-strategy="temperature:0.7"]')
    expected = compare(bundled, position(page), parse_strategies("temperature:0.7"), seed=7, max_new_tokens=6)
    assert json.loads(cell.get_attribute("data-ids")) == expected[0].token_ids


def test_beam_tree_best_beam_is_the_librarys_beam_search(server, page, bundled, artifacts):
    start(page, server.url, "Once upon a time, there was a dragon who")
    greedy_steps(page, 2)
    page.fill("#lv-beam-k", "3")
    page.fill("#lv-beam-n", "5")
    page.click("#lv-beam")
    settle(page)
    answered(page, "beam", bundled)
    result = bundled.beam_search(position(page), num_beams=3, max_new_tokens=5)
    best = page.eval_on_selector_all(
        "#lv-beam-box .lv-node.lv-best:not(.lv-root)",
        "nodes => nodes.map(n => [Number(n.dataset.step), Number(n.dataset.token)])",
    )
    assert [token for _, token in sorted(best)] == result.sequences[0].token_ids
    assert json.loads(page.locator("#lv-beam-best").get_attribute("data-ids")) == result.sequences[0].token_ids
    statuses = page.eval_on_selector_all("#lv-beam-box .lv-node", "nodes => nodes.map(n => n.dataset.status)")
    assert statuses == [node.status for node in result.tree.nodes]  # every node, with its fate
    page.locator("#lv-beam-box .lv-node.lv-best:not(.lv-root)").last.click()  # a tap tells a node's numbers
    expect(page.locator("#lv-beam-info")).to_contain_text("on the best beam")
    fits_viewport(page)
    page.locator("#learner-views").screenshot(path=artifacts / f"views-beam-{page.viewport_name}.png")


def test_a_reply_for_an_older_session_is_dropped(server, page):
    start(page, server.url, "The capital of France is")
    held, released = [], []

    def hold(route):  # the first compare request waits until the test lets it go; later ones go at once
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route("**/api/compare", hold)
    with page.expect_request("**/api/compare"):
        page.click("#lv-compare")
    expect(page.locator("#lv-compare")).to_be_disabled()  # busy: one request at a time
    expect(page.locator("#lv-beam")).to_be_disabled()
    page.fill("#prompt", "A different prompt")
    page.click("#start")  # a new session while the comparison is out
    expect(page.locator("#prompt-text")).to_have_text("A different prompt")
    expect(page.locator("body")).to_have_attribute("data-busy", "0")
    released.append(True)
    for route in held:
        route.continue_()
    expect(page.locator("#learner-views")).to_have_attribute("data-busy", "0")
    expect(page.locator("#lv-compare")).to_be_enabled()
    assert page.locator("#lv-compare-box table").count() == 0  # the old session's comparison is not shown
    assert page.locator("#lv-compare-status").text_content() == ""


def test_korean_reads_as_hangul(server, page, artifacts):
    start(page, server.url, "한국의 수도는")
    greedy_steps(page, 6)
    current = state(page)
    titles = " ".join(page.eval_on_selector_all("#lv-chart .lv-band title", "ts => ts.map(t => t.textContent)"))
    syllables = set(HANGUL.findall(current["text"]))
    assert syllables, f"the greedy continuation has no Hangul: {current['text']!r}"
    assert syllables <= set(HANGUL.findall(titles))  # every syllable written is named by a step's label
    page.click("#lv-beam")
    settle(page)
    answered(page, "beam")
    labels = " ".join(page.locator("#lv-beam-box .lv-node-piece").all_text_contents())
    assert HANGUL.search(labels), labels  # a node that completes a syllable shows it
    fits_viewport(page)
    page.locator("#learner-views").screenshot(path=artifacts / f"views-korean-{page.viewport_name}.png")


def test_the_page_does_not_scroll_sideways_on_a_phone(server, browser):
    context = browser.new_context(viewport=VIEWPORTS["phone"])
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    try:
        start(page, server.url, "The capital of France is")
        greedy_steps(page, 4)
        page.click("#lv-beam")
        settle(page)
        assert page.evaluate("document.documentElement.scrollWidth") == VIEWPORTS["phone"]["width"]
    finally:
        context.close()
