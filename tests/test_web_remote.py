"""The web explorer on a remote model: `decodelab serve` fronting another decodelab server, in a real headless
Chromium. That server tells only its top 20 tokens per position, so the page shows those, then one "rest (not
known)" bar holding the mass it did not tell, the entropy as its bounds, and its own chain keeps the reported
tokens only, as the server's `reported` stage does. Both servers run in this process (tests/live_server.py).
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect

import decodelab
import test_web
from browser import chromium, screenshot
from live_server import live_server
from test_web import config_for, declared_settings, set_controls, settle

pytestmark = test_web.pytestmark  # slow; skipped without Chromium

PROMPT = "The capital of France is"
CLOSE = 1e-3  # the far server computes each position as a prefill of the whole prefix, the near one from its cache


@pytest.fixture(scope="module")
def remote_lm(server):
    """The bundled model as the test session's `server` fronts it: a remote LM."""
    return decodelab.load(server.url + "/v1")


@pytest.fixture(scope="module")
def front(remote_lm):
    """decodelab serve on the remote LM (as `decodelab serve --model http://...`): the page under test."""
    with live_server(remote_lm) as running:
        yield running


@pytest.fixture
def page():
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        yield page
    assert not errors, f"JavaScript errors on the page: {errors}"


def token_bars(page, source: str = "page") -> list[dict]:
    """The token bars (not the rest): id, raw and post-chain probability."""
    expect(page.locator("#bars")).to_have_attribute("data-source", source)
    return page.eval_on_selector_all(
        "button.bar-row",
        "rows => rows.map(row => ({id: Number(row.dataset.id), raw: Number(row.dataset.raw), "
        "post: Number(row.dataset.post)}))",
    )


def after_chain(url: str, prompt: str, config: dict) -> dict[int, float]:
    """The front server's own chain for `prompt`: {id: prob} (its `reported` stage first)."""
    reply = httpx.post(f"{url}/api/next", json={"prompt": prompt, "config": config, "top": 50}, timeout=60)
    reply.raise_for_status()
    return {c["id"]: c["prob"] for c in reply.json()["next"]["after"]}


def test_the_page_on_a_remote_model_shows_what_the_server_did_not_tell(front, remote_lm, bundled, page):
    info = httpx.get(f"{front.url}/api/info", timeout=60).json()
    assert info["source"] == "remote" and info["mode"]["remote"] == "decodelab"

    page.goto(front.url)
    expect(page.locator("#model-info")).to_contain_text("remote model (decodelab)")
    page.fill("#prompt", PROMPT)
    page.click("#start")
    settle(page)

    # The reported tokens, most likely first, then one bar for the rest: not a token, so not a button.
    far = remote_lm.next_token_distribution(PROMPT)
    near = bundled.next_token_distribution(PROMPT)
    shown = token_bars(page)
    assert len(shown) == 20 and all(far.reported[bar["id"]] for bar in shown)
    assert shown[0]["id"] == near.top(1)[0].id
    for bar, candidate in zip(shown, near.top(20)):
        assert bar["id"] == candidate.id and bar["raw"] == pytest.approx(candidate.prob, abs=CLOSE)
    rest = page.locator("#bars .bar-row.rest")
    expect(rest).to_have_count(1)
    expect(rest).to_contain_text("rest (not known)")
    assert rest.evaluate("row => row.tagName") == "DIV"
    expect(page.locator("#bars .bar-row").last).to_have_class("bar-row rest")
    assert float(rest.get_attribute("data-raw")) == pytest.approx(1 - far.known_mass, abs=1e-6)
    assert 1 - far.known_mass > 0.01  # the case is not trivial
    percent = rest.locator(".raw-value").text_content()
    assert float(percent.rstrip("%")) == pytest.approx(100 * (1 - far.known_mass), abs=0.051)  # as rounded

    lowest, highest = far.entropy_bounds
    summary = page.locator("#dist-summary")
    expect(summary).to_contain_text(f"entropy between {lowest:.2f} and {highest:.2f} nats (the server told its top 20)")
    expect(summary).to_contain_text(f"the top 20 hold {100 * far.known_mass:.1f}% of the mass; the rest is not known")

    # The page's own chain keeps the reported tokens only, as the front server's chain does.
    declared = declared_settings(front)
    values = set_controls(page, {"temperature": 1.5, "top_p": 0.95})
    shown = token_bars(page)
    after = after_chain(front.url, PROMPT, config_for(values, declared))
    assert 1 < len(after) < 20  # top-p cuts among the reported tokens
    assert sum(bar["post"] for bar in shown) == pytest.approx(1, abs=1e-4)  # none of it on unknown tokens
    for bar in shown:
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar
    expect(summary).to_contain_text("of 20 reported tokens possible")

    # A stage only the server runs: the bars are its answer, over the same reported tokens, and the rest.
    penalized = set_controls(page, {"repetition_penalty": 1.3})
    served = token_bars(page, "server")
    assert [bar["id"] for bar in served] == [bar["id"] for bar in shown]
    after = after_chain(front.url, PROMPT, config_for({**values, **penalized}, declared))
    for bar in served:
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar
    expect(rest).to_have_count(1)
    expect(summary).to_contain_text("of 20 reported tokens possible")
    page.fill("#repetition-penalty", "1")
    assert token_bars(page) == shown

    # A sample step draws from what is shown; the next state has its own rest bar.
    posts = {bar["id"]: bar["post"] for bar in shown}
    page.click("#sample-step")
    settle(page)
    expect(page.locator("#steps tbody tr")).to_have_count(1)
    step = page.evaluate("decodelab.page.state.steps.at(-1)")
    assert step["prob"] == pytest.approx(posts[step["id"]], abs=1e-4)
    expect(rest).to_have_count(1)
    expect(page.locator("#error")).to_be_hidden()

    screenshot(page, "explorer-remote")
