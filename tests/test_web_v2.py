"""The explorer's second edition (#18) in a real headless Chromium, at a desktop (1280x900) and a phone (390x844)
viewport: Generate N streams and stops, a new prompt during a generation cannot corrupt the page, history
branches anywhere and redoes exactly, a downloaded trace replays exactly, the distribution hides no mass, Korean
byte tokens sit under their syllable, and the page never scrolls sideways on a phone.

No test times anything: each waits on what the page shows, with generous timeouts (a loaded 2-core machine).
Screenshots go to $DECODELAB_ARTIFACTS/screenshots (default: artifacts/screenshots in the repository, which
git ignores) for a human to look at.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect

from browser import ARTIFACTS, BROWSER_MARKS, VIEWPORTS, chromium, give_back_session

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(module_server):
    """This module's own server (see conftest's `module_server`)."""
    return module_server


SHOTS = ARTIFACTS / "screenshots"
LONG = 60_000  # ms: a step on a busy 2-core machine can take a while
STORY = "Once upon a time, in a small village by the sea, there lived"


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def open_page(browser, viewport: dict):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(LONG)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


@pytest.fixture(params=list(VIEWPORTS))
def page(request, browser):
    context, page, errors = open_page(browser, VIEWPORTS[request.param])
    page.viewport_name = request.param
    yield page
    give_back_session(page)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SHOTS / f"{name}-{page.viewport_name}.png", full_page=True)


def settle(page) -> None:
    expect(page.locator("body")).to_have_attribute("data-busy", "0", timeout=LONG)


def start(page, url: str, prompt: str, chat: bool = False, seed: int | None = None) -> None:
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2", timeout=LONG)
    page.fill("#prompt", prompt)
    if chat:
        page.check("#chat")
    if seed is not None:
        page.fill("#seed", str(seed))
    page.click("#start")
    settle(page)
    expect(page.locator("button.bar-row")).to_have_count(20)


def rows(page):
    return page.locator("#steps tbody tr")


def step_ids(page) -> list[int]:
    return page.evaluate("decodelab.page.state.steps.map(step => step.id)")


def generate(page, count: int) -> None:
    page.fill("#generate-count", str(count))
    page.click("#generate")


def stats(server) -> dict:
    return httpx.get(f"{server.url}/api/stats", timeout=60).json()


def wait_for(condition, what: str, page, timeout_ms: int = LONG) -> None:
    """Poll a condition outside the page (the server's stats) without timing anything."""
    for _ in range(timeout_ms // 250):
        if condition():
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"timed out waiting for {what}")


def page_session(server, page):
    """The explorer session the page shows, as the server holds it (`sessions.LiveSession`)."""
    session_id, secret = page.evaluate("[decodelab.page.state.id, decodelab.page.secret]")
    return server.state.sessions.get(session_id, secret)


def test_new_prompt_during_generate_shows_only_the_new_session(server, page):
    """The race of #18: Ctrl+Enter with a new prompt while Generate N runs. The old generation is cancelled
    (the server counts it), its session is gone, and nothing of it reaches the page later. The model thread
    pauses after the fourth step (three sent) until the page has closed the old stream, so the 300 steps cannot end first."""
    start(page, server.url, STORY)
    old = page_session(server, page)
    cancelled = stats(server)["cancelled"]
    with server.paused_when(lambda: len(old.session.steps) >= 4) as pause:
        generate(page, 300)
        pause.wait("the fourth step")
        expect(page.locator("#stop")).to_be_visible()
        expect(rows(page)).to_have_count(3)  # rows stream in before the end ...
        expect(page.locator("body")).to_have_attribute("data-busy", "1")  # ... while it still runs
        expect(page.locator("#stop-reason")).to_contain_text("Generating:")
        running = old.lock.running

        page.fill("#prompt", "The capital of France is")
        page.focus("#prompt")
        page.keyboard.press("Control+Enter")
        wait_for(lambda: running.stream.finished, "the page to close the old generation's stream", page)
    settle(page)
    expect(page.locator("#prompt-text")).to_have_text("The capital of France is")
    assert page.evaluate("decodelab.page.state.id") != old.id
    wait_for(lambda: stats(server)["cancelled"] > cancelled, "the old generation to be cancelled", page)
    wait_for(lambda: stats(server)["active"] == 0, "nothing left running on the server", page)
    old_state = httpx.get(f"{server.url}/api/sessions/{old.id}", timeout=60)
    assert old_state.status_code in (403, 404)  # the old session was given back
    assert len(old.session.steps) == 4  # stopped where it paused

    # Nothing of the old session reached the page, and the new one works.
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#tokens .chip")).to_have_count(5)
    expect(page.locator("#generated-text")).to_have_text("")
    page.click("#greedy-step")
    settle(page)
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#prompt-text")).to_have_text("The capital of France is")
    expect(page.locator("#error")).to_be_hidden()
    shot(page, "race")


def test_stop_keeps_the_rows_made_so_far(server, page):
    """The model thread pauses after the third step (two sent) until the Stop has reached the server: the 300 steps
    cannot end before the click, however slowly the page draws."""
    start(page, server.url, STORY)
    live = page_session(server, page)
    cancelled = stats(server)["cancelled"]
    with server.paused_when(lambda: len(live.session.steps) >= 3) as pause:
        generate(page, 300)
        pause.wait("the third step")
        expect(rows(page)).to_have_count(2)  # streamed rows, before the end
        expect(page.locator("#stop-reason")).to_contain_text("of 300")
        running = live.lock.running
        page.click("#stop")
        wait_for(lambda: running.stream.finished, "the Stop to reach the server", page)
    settle(page)
    assert page.evaluate("decodelab.page.state.steps.length") == 3  # the third was made before the Stop
    expect(rows(page)).to_have_count(3)
    expect(page.locator("#stop-reason")).to_contain_text("Generated 3 of 300")
    expect(page.locator("#stop")).to_be_hidden()
    wait_for(lambda: stats(server)["cancelled"] > cancelled, "the server to count the cancellation", page)
    page.click("#greedy-step")  # the session goes on from there
    settle(page)
    expect(rows(page)).to_have_count(4)
    expect(page.locator("#error")).to_be_hidden()
    shot(page, "stopped")


def test_the_page_never_scrolls_sideways(server, browser):
    """At 390 and 360 px: a long prompt, long pieces and a full step table stay inside the screen (tables
    scroll in their box); on a phone the bars come right after the step buttons."""
    for width in (390, 360):
        context, page, errors = open_page(browser, {"width": width, "height": 844})
        page.viewport_name = f"phone{width}"
        start(page, server.url, "A long prompt with a_very_long_identifier_that_does_not_break " * 3)
        page.fill("#temperature", "1.5")
        page.fill("#top-p", "0.5")
        page.click("#greedy-step")
        settle(page)
        generate(page, 6)
        settle(page)
        expect(rows(page)).to_have_count(7)
        assert page.evaluate("document.documentElement.scrollWidth") == width
        assert page.evaluate("document.body.scrollWidth") <= width
        actions, bars, steps = (
            page.locator(selector).bounding_box() for selector in (".actions", ".next-panel", ".steps-panel")
        )
        assert actions["y"] < bars["y"] < steps["y"]  # the bars right after the step buttons
        shot(page, "narrow")
        context.close()
        assert not errors, errors


def test_branching_from_step_3_of_10_and_redo(server, page):
    start(page, server.url, "The capital of France is")
    page.check("#greedy")
    generate(page, 10)
    settle(page)
    expect(rows(page)).to_have_count(10)
    first = step_ids(page)
    assert all(step["how"] == "greedy" for step in page.evaluate("decodelab.page.state.steps"))

    # Click the third token's chip: back to there, steps 1-3 stay; a new step 4 follows.
    page.locator('#tokens .chip[data-step="2"]').click()
    settle(page)
    expect(rows(page)).to_have_count(3)
    assert step_ids(page) == first[:3]
    expect(page.locator("#redo")).to_be_enabled()
    page.click("#redo")  # the step taken back comes back exactly
    settle(page)
    assert step_ids(page) == first[:4]

    # An alternative in step 4's row: steps 1-3 stay, the alternative is the new step 4.
    alternative = rows(page).nth(3).locator("button.alternative").first
    chosen = int(alternative.get_attribute("data-id"))
    assert chosen != first[3]
    alternative.click()
    settle(page)
    expect(rows(page)).to_have_count(4)
    ids = step_ids(page)
    assert ids[:3] == first[:3] and ids[3] == chosen
    expect(rows(page).nth(3)).to_have_class("forced")
    expect(rows(page).nth(3).locator(".how-tag")).to_have_text("forced")

    # The branch taken back (steps 4-10) is kept: restoring it gives the first run back, token for token.
    restore = page.locator("#branches .restore")
    expect(restore).to_have_count(1)
    expect(page.locator("#branches")).to_contain_text("after step 3 · 7 tokens")
    restore.click()
    settle(page)
    expect(rows(page)).to_have_count(10)
    assert step_ids(page) == first
    # ... and the branch it replaced is kept in turn.
    expect(page.locator("#branches")).to_contain_text("after step 3 · 1 tokens")

    # Undo to here (↶ on step 6): back to 5 steps.
    rows(page).nth(5).locator("button.back").click()
    settle(page)
    assert step_ids(page) == first[:5]
    expect(page.locator("#error")).to_be_hidden()
    shot(page, "branches")


def test_a_downloaded_trace_loads_back_and_replays_exactly(server, page, tmp_path):
    start(page, server.url, STORY, seed=1234)
    page.fill("#temperature", "1.2")
    page.fill("#top-k", "40")
    generate(page, 8)
    settle(page)
    steps = page.evaluate("decodelab.page.state.steps")
    assert len(steps) == 8 and all(step["how"] == "sampled" for step in steps)
    expect(rows(page).first.locator(".how-seed")).to_contain_text("seed")
    expect(rows(page).first.locator(".how-settings")).to_contain_text("top-k 40")
    text = page.locator("#generated-text").text_content()

    with page.expect_download() as download:
        page.click("#download-json")
    saved = tmp_path / "trace.json"
    download.value.save_as(saved)
    trace = json.loads(saved.read_text())["trace"]
    assert [token["id"] for token in trace["tokens"]] == [step["id"] for step in steps]

    with page.expect_download() as download:
        page.click("#download-csv")
    table = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [int(row["id"]) for row in table] == [step["id"] for step in steps]
    assert [row["how"] for row in table] == ["sampled"] * 8

    # Another session, then the file loaded back: the same tokens, made the same way.
    page.fill("#prompt", "Something else entirely")
    page.click("#start")
    settle(page)
    expect(rows(page)).to_have_count(0)
    page.set_input_files("#load-trace", str(saved))
    settle(page)
    expect(rows(page)).to_have_count(8)
    replayed = page.evaluate("decodelab.page.state.steps")
    assert [step["id"] for step in replayed] == [step["id"] for step in steps]
    assert [step["how"] for step in replayed] == ["sampled"] * 8
    assert page.locator("#generated-text").text_content() == text
    assert STORY in page.locator("#prompt-text").text_content()

    # The same seed and settings from the prompt draw the same tokens again.
    page.fill("#prompt", STORY)
    page.fill("#seed", "1234")
    page.click("#start")
    settle(page)
    generate(page, 8)
    settle(page)
    assert step_ids(page) == [step["id"] for step in steps]
    expect(page.locator("#error")).to_be_hidden()
    shot(page, "replayed")


def test_korean_byte_tokens_sit_under_their_syllable(server, page):
    start(page, server.url, "한국의 수도는")
    groups = page.locator("#tokens .char-group")
    assert groups.evaluate_all("gs => gs.map(g => g.dataset.text)") == ["한", "국", "의", "수", "도", "는"]
    loose = page.eval_on_selector_all(
        "#tokens > .chip", "chips => chips.filter(c => c.textContent.includes('<0x')).length"
    )
    assert loose == 0  # every byte chip is in a group

    # Generate, then go back to the middle of a generated character: the text shows a placeholder, never
    # <0xNN>, and the bar of the byte that came next says which character it completes.
    page.check("#greedy")
    generate(page, 12)
    settle(page)
    generated = page.locator("#tokens .char-group:has(.chip.generated)")
    assert generated.count() >= 1, "the model wrote no split character"
    group = generated.first
    chips = group.locator(".chip")
    label = group.get_attribute("data-text")
    before_last = int(chips.nth(chips.count() - 2).get_attribute("data-step"))
    completing = page.evaluate(f"decodelab.page.state.steps[{before_last + 1}].id")
    chips.nth(chips.count() - 2).click()
    settle(page)
    expect(page.locator("#text .partial-char")).to_be_visible()
    assert "<0x" not in page.locator("#text").text_content()
    expect(page.locator(f'button.bar-row[data-id="{completing}"] .completes')).to_have_text(f"completes {label}")
    expect(page.locator("#tokens .char-group.unfinished")).to_have_count(1)
    shot(page, "korean")


def test_the_distribution_hides_no_mass(server, page):
    start(page, server.url, STORY)
    page.fill("#temperature", "2")

    def shown() -> tuple[list[dict], dict]:
        expect(page.locator("#bars")).to_have_attribute("data-source", "page")
        bars = page.eval_on_selector_all(
            "#bars .bar-row", "rows => rows.map(r => ({raw: Number(r.dataset.raw), post: Number(r.dataset.post)}))"
        )
        return bars[:-1], bars[-1]

    tokens, rest = shown()
    expect(page.locator("#bars .bar-row.rest")).to_contain_text("rest of the vocabulary")
    assert rest["post"] > 0.3 and rest["raw"] > 0  # at T=2 the top 20 hold little of the chain's mass ...
    assert sum(bar["raw"] for bar in tokens) + rest["raw"] == pytest.approx(1, abs=1e-4)  # ... the rest bar the rest
    assert sum(bar["post"] for bar in tokens) + rest["post"] == pytest.approx(1, abs=1e-4)
    summary = page.locator("#dist-summary").text_content()
    before, after = (float(part.split(" nats")[0].split()[-1]) for part in summary.split("→")[:2])
    assert after > before  # T=2 flattens: the entropy after the chain is higher

    page.fill("#temperature", "1")
    page.fill("#top-p", "0.5")
    page.fill("#min-p", "0.05")
    tokens, rest = shown()
    assert sum(bar["post"] for bar in tokens) + rest["post"] == pytest.approx(1, abs=1e-4)
    expect(page.locator("#bars .cut-line[data-stage=top_p]")).to_have_count(1)
    expect(page.locator("#pipeline li[data-stage=top_p] .kept")).to_contain_text("keeps")
    expect(page.locator("#pipeline li[data-stage=top_p] .stage-name")).to_have_text("top-p 0.5")
    removed = page.locator("button.bar-row.removed").first
    assert removed.locator(".bar.post").count() == 0  # no sliver of a post bar on a removed row
    assert all(len(text) <= 6 for text in page.locator("#bars .raw-value").all_text_contents())

    # Every stage's explanation opens by tap (a button), not by hover.
    info = page.locator(".stage-controls[data-stage=top_p] button.info")
    note = page.locator(".stage-controls[data-stage=top_p] .explain")
    expect(note).to_be_hidden()
    info.click()
    expect(note).to_be_visible()
    expect(note).to_contain_text("top-p")
    served = httpx.get(f"{server.url}/api/info", timeout=60).json()["stages"]
    shown_stages = page.eval_on_selector_all(".stage-controls", "gs => gs.map(g => g.dataset.stage)")
    assert sorted(shown_stages) == sorted(stage["name"] for stage in served)  # every registered sampler
    shot(page, "distribution")


def test_n_out_of_range_is_said_not_changed_and_the_stop_token_is_a_marker(server, page):
    start(page, server.url, "What is the capital of France?", chat=True)
    for typed in ("0", "600", "2.5"):
        generate(page, typed)
        expect(page.locator("#error")).to_contain_text(f"N must be a whole number from 1 to 512, got {typed}")
        expect(rows(page)).to_have_count(0)
        assert page.input_value("#generate-count") == typed
    expect(page.locator("#shortcuts")).to_contain_text("greedy step")

    page.check("#greedy")
    generate(page, 40)
    settle(page)
    expect(page.locator("#stop-reason")).to_contain_text("Stopped: stop token")
    expect(page.locator("#generated-text .stop-marker")).to_have_count(1)  # <|im_end|> as a marker ...
    assert "<|im_end|>" not in page.locator("#text").text_content()  # ... not as text
    assert "Paris" in page.locator("#generated-text").text_content()
    # The Text and Tokens panels follow the end.
    for box in ("#text", "#tokens"):
        gap = page.eval_on_selector(box, "box => box.scrollHeight - box.scrollTop - box.clientHeight")
        assert gap <= 2, (box, gap)
