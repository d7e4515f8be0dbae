"""The web explorer at `/`, driven in a real headless Chromium (Debian's, through Playwright for Python).

A person's path through the page: type a prompt, see the bars, reshape them with the sliders (no request
is made), click a candidate, step, generate, undo. The page re-runs the sampler chain itself, so a parity
test checks its probabilities against the server's `after` for the same settings. Screenshots are saved
in tests/artifacts/ for a human to look at.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect, sync_playwright

CHROMIUM = os.environ.get("DECODELAB_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM}: `make` installs Debian's chromium package"
    ),
]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # fresh localStorage per test
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def start(page, url: str, prompt: str, chat: bool = False) -> None:
    page.goto(url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    page.fill("#prompt", prompt)
    if chat:
        page.check("#chat")
    page.click("#start")
    settle(page)
    expect(page.locator(".bar-row")).to_have_count(20)


def settle(page) -> None:
    """Wait until the page's request (if any) has been answered and rendered."""
    expect(page.locator("body")).to_have_attribute("data-busy", "0")


def bars(page) -> list[dict]:
    """The bars as the page shows them: id, rank, raw and post-chain probability."""
    return page.eval_on_selector_all(
        ".bar-row",
        """rows => rows.map(row => ({
        id: Number(row.dataset.id), rank: Number(row.dataset.rank),
        raw: Number(row.dataset.raw), post: Number(row.dataset.post)}))""",
    )


def step_rows(page) -> int:
    return page.locator("#steps tbody tr").count()


def test_explorer_walkthrough(server, page):
    start(page, server.url, "The capital of France is")
    assert page.locator("#prompt-text").text_content() == "The capital of France is"
    chips = page.locator("#tokens .chip")
    assert chips.count() == 5 and "France" in chips.nth(3).text_content()
    before = bars(page)
    assert before[0]["post"] == pytest.approx(before[0]["raw"], abs=1e-6)  # temperature 1, no filter yet
    assert sum(bar["raw"] for bar in before) < 1

    # Move the temperature slider like a person (keyboard on the focused slider): bars change, no request.
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.focus("#temperature")
    for _ in range(6):
        page.keyboard.press("ArrowLeft")  # 1.00 -> 0.70
    expect(page.locator("#temperature-value")).to_have_text("0.70")
    cooler = bars(page)
    assert [bar["raw"] for bar in cooler] == [bar["raw"] for bar in before]
    assert cooler[0]["post"] > before[0]["post"] + 0.01  # a cooler softmax sharpens the top
    assert cooler[5]["post"] < before[5]["post"]
    page.fill("#top-k", "3")
    expect(page.locator(".bar-row.removed")).to_have_count(17)
    assert requests == [], f"moving the sliders asked the server: {requests}"
    page.fill("#top-k", "0")

    # Click a candidate that is not the model's first choice: the text grows by exactly that token.
    second = page.locator(".bar-row").nth(1)
    piece = second.locator(".piece").text_content().replace("␣", " ")
    second.click()
    settle(page)
    expect(page.locator("#steps tbody tr")).to_have_count(1)
    assert page.locator("#generated-text").text_content() == piece
    assert page.locator("#steps tbody tr.forced").count() == 1
    assert len(requests) == 1 and requests[0].endswith("/append")

    # Sample step: the server draws from exactly the distribution the bars show.
    shown = {bar["id"]: bar["post"] for bar in bars(page)}
    page.click("#sample-step")
    settle(page)
    expect(page.locator("#steps tbody tr")).to_have_count(2)
    last = page.evaluate("decodelab.page.state.steps.at(-1)")
    if last["id"] in shown:
        assert last["prob"] == pytest.approx(shown[last["id"]], abs=1e-4)

    # Generate N fills the step table (or stops early and says why).
    page.fill("#generate-count", "6")
    page.click("#generate")
    settle(page)
    rows = step_rows(page)
    stop_line = page.locator("#stop-reason").text_content()
    assert rows == 8 or (2 <= rows < 8 and "Stopped" in stop_line), (rows, stop_line)
    assert f"Generated {rows - 2} of 6" in stop_line
    text = page.locator("#generated-text").text_content()
    assert len(text) > len(piece)

    page.click("#undo")
    settle(page)
    expect(page.locator("#steps tbody tr")).to_have_count(rows - 1)
    assert len(page.locator("#generated-text").text_content()) < len(text)
    expect(page.locator("#error")).to_be_hidden()

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "explorer.png", full_page=True)


@pytest.mark.parametrize(
    "temperature, top_k, top_p, min_p",
    [
        (1.3, 40, 0.9, 0.02),
        (1.6, 0, 0.8, 0),
        (1.0, 12, 1.0, 0.05),
    ],
)
def test_page_chain_matches_server(server, page, temperature, top_k, top_p, min_p):
    prompt = "Once upon a time, in a small village,"
    start(page, server.url, prompt)
    for slider, value in (("#temperature", temperature), ("#top-k", top_k), ("#top-p", top_p), ("#min-p", min_p)):
        page.fill(slider, str(value))
    shown = bars(page)

    config = {
        "temperature": temperature,
        "top_k": top_k or None,
        "top_p": top_p if top_p < 1 else None,
        "min_p": min_p or None,
    }
    reply = httpx.post(f"{server.url}/api/next", json={"prompt": prompt, "config": config, "top": 50}, timeout=60)
    reply.raise_for_status()
    after = {c["id"]: c["prob"] for c in reply.json()["next"]["after"]}
    raw = {c["id"]: c["prob"] for c in reply.json()["next"]["top"]}

    assert [bar["id"] for bar in shown] == list(raw)[:20]  # the model's own ranking
    for bar in shown:
        assert bar["raw"] == pytest.approx(raw[bar["id"]], abs=1e-4)
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar
    kept = sum(bar["post"] > 0 for bar in shown)
    assert 1 < kept  # the case is not trivial ...
    assert len(after) == kept or len(after) > 20  # ... and both agree on which tokens survive


CHAIN_CASES = [  # (probabilities of ids 0..3, sliders, expected probabilities after the page's chain)
    ([0.1, 0.2, 0.3, 0.4], {"topP": 0.7}, [0, 0, 0.428571, 0.571429]),
    ([0.1, 0.2, 0.3, 0.4], {"topK": 2}, [0, 0, 0.428571, 0.571429]),
    ([0.1, 0.2, 0.3, 0.4], {"minP": 0.4}, [0, 0.222222, 0.333333, 0.444444]),
    ([0.1, 0.2, 0.3, 0.4], {"temperature": 0.5}, [0.033333, 0.133333, 0.3, 0.533333]),
    ([0.1, 0.2, 0.3, 0.4], {"temperature": 2, "topP": 0.5}, [0, 0, 0.464102, 0.535898]),
    ([0.25, 0.25, 0.25, 0.25], {"topK": 1}, [0.25, 0.25, 0.25, 0.25]),  # ties with the k-th stay
    ([0.1, 0.2, 0.3, 0.4], {"greedy": True}, [0, 0, 0, 1]),
]


def test_page_chain_on_hand_computed_distributions(server, page):
    page.goto(server.url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    for probs, sliders, expected in CHAIN_CASES:
        got = page.evaluate(
            """([probs, sliders]) => {
            const logits = Float32Array.from(probs, Math.log);
            const order = Uint32Array.from(probs.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
            const position = new Uint32Array(order.length);
            order.forEach((id, j) => { position[id] = j; });
            const chain = decodelab.runChain({logits, order, position},
                {temperature: 1, topK: 0, topP: 1, minP: 0, greedy: false, ...sliders});
            return probs.map((_, id) => chain.prob(id));
        }""",
            [probs, sliders],
        )
        assert got == pytest.approx(expected, abs=1e-6), (probs, sliders)


def test_greedy_shows_the_argmax_only_and_stops(server, page):
    start(page, server.url, "What is the capital of France?", chat=True)
    expect(page.locator("#sample-step")).to_be_enabled()
    page.check("#greedy")
    expect(page.locator("#sample-step")).to_be_disabled()
    shown = bars(page)
    assert shown[0]["post"] == 1 and all(bar["post"] == 0 for bar in shown[1:])
    page.fill("#generate-count", "40")
    page.click("#generate")
    settle(page)
    steps = page.evaluate("decodelab.page.state.steps")
    assert 1 <= len(steps) < 40 and all(step["rank"] == 1 for step in steps)
    expect(page.locator("#steps tbody tr")).to_have_count(len(steps))
    expect(page.locator("#stop-reason")).to_contain_text(f"Generated {len(steps)} of 40. Stopped: stop token")
    assert "Paris" in page.locator("#generated-text").text_content()


def test_korean_prompt_and_reply(server, page):
    start(page, server.url, "안녕하세요", chat=True)
    assert "안녕하세요" in page.locator("#prompt-text").text_content()
    pieces = page.locator("#tokens .chip .piece").all_text_contents()
    assert any("<0x" in piece for piece in pieces)  # SmolLM2 splits Hangul syllables into bytes ...
    titles = page.eval_on_selector_all("#tokens .chip", "chips => chips.map(chip => chip.title)")
    assert any("part of “안" in title for title in titles)  # ... and each such chip names its character
    assert any(chip for chip in page.locator("#tokens .chip.special").all_text_contents())
    page.check("#greedy")
    page.fill("#generate-count", "12")
    page.click("#generate")
    settle(page)
    text = page.locator("#text").text_content()
    assert "\ufffd" not in text and "안녕하세요" in text
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "explorer-korean.png", full_page=True)


def test_errors_show_on_one_line(server, page):
    page.goto(server.url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    expect(page.locator("#error")).to_be_hidden()
    page.fill("#prompt", "")
    page.click("#start")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("prompt is empty")
    page.fill("#prompt", "Hello")
    page.click("#start")
    settle(page)
    expect(page.locator("#error")).to_be_hidden()
    expect(page.locator(".bar-row")).to_have_count(20)


def test_api_key_flow(bundled, page):
    from live_server import live_server

    with live_server(bundled, api_key="sekret") as locked:
        page.goto(locked.url)
        expect(page.locator("#error")).to_contain_text("no API key was sent")
        expect(page.locator("#key-box")).to_be_visible()
        expect(page.locator("#model-info")).to_have_text("this server needs its API key")
        page.fill("#api-key", "sekret")
        page.click("#use-key")
        expect(page.locator("#model-info")).to_contain_text("SmolLM2")
        expect(page.locator("#key-box")).to_be_hidden()
        expect(page.locator("#error")).to_be_hidden()
        page.fill("#prompt", "Hi")
        page.click("#start")
        settle(page)
        expect(page.locator(".bar-row")).to_have_count(20)
        page.reload()  # the key is remembered
        expect(page.locator("#model-info")).to_contain_text("SmolLM2")
        assert page.evaluate("localStorage.getItem('decodelab-api-key')") == "sekret"


def test_a_full_session_store_does_not_stop_the_page(bundled, page):
    """The server keeps one session: the page's new prompt gives back its own old session and carries on,
    and another client cannot drive the page's session by its id."""
    from live_server import live_server

    with live_server(bundled, max_sessions=1) as running:
        start(page, running.url, "Hello")
        first = page.evaluate("page.state.id")
        assert httpx.post(f"{running.url}/api/sessions/{first}/step", json={}).status_code == 403
        page.fill("#prompt", "The capital of France is")
        page.click("#start")
        settle(page)
        expect(page.locator("#prompt-text")).to_have_text("The capital of France is")
        expect(page.locator("#error")).to_be_hidden()
        assert page.evaluate("page.state.id") != first and len(running.state.sessions) == 1
        page.click("#greedy-step")
        settle(page)
        assert step_rows(page) == 1
