"""The web explorer at `/`, driven in a real headless Chromium (Debian's, through Playwright for Python).

A person's path through the page: type a prompt, see the bars, reshape them with the sliders (no request
is made), click a candidate, step, generate, undo. The sampler controls are built from /api/info's stage
list, so a test checks that every declared slider is on the page. The page re-runs the stages it knows
(temperature, top-nσ, top-k, top-p, min-p, epsilon and eta cutoffs), so a parity test checks its
probabilities against the server's `after` for the same settings; any other stage that is on (a penalty,
typical-p, ...) is computed by the server, and a test checks that the page then shows the server's
distribution. So is a constraint set in the page's box: tests check that the bars strike through exactly the
tokens the library's grammar forbids and that the output matches. Screenshots are saved under artifacts/
(tests/browser.py) for a human to look at.
"""

from __future__ import annotations

import httpx
import pytest

pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect

from browser import BROWSER_MARKS, chromium, give_back_session, screenshot

pytestmark = BROWSER_MARKS


@pytest.fixture(scope="module")
def server(module_server):
    """This module's own server (see conftest's `module_server`)."""
    return module_server


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})  # fresh localStorage per test
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    give_back_session(page)
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
    expect(page.locator("button.bar-row")).to_have_count(20)


def settle(page) -> None:
    """Wait until the page's request (if any) has been answered and rendered."""
    expect(page.locator("body")).to_have_attribute("data-busy", "0")


def bars(page, source: str = "page") -> list[dict]:
    """The bars as the page shows them: id, rank, raw and post-chain probability (computed by `source`)."""
    expect(page.locator("#bars")).to_have_attribute("data-source", source)
    return page.eval_on_selector_all(
        "button.bar-row",
        """rows => rows.map(row => ({
        id: Number(row.dataset.id), rank: Number(row.dataset.rank),
        raw: Number(row.dataset.raw), post: Number(row.dataset.post)}))""",
    )


def control_id(setting: str) -> str:
    return "#" + setting.replace("_", "-")


def info(server) -> dict:
    reply = httpx.get(f"{server.url}/api/info", timeout=60)
    reply.raise_for_status()
    return reply.json()


def declared_settings(server) -> dict[str, dict]:
    """Every setting /api/info declares, by name."""
    return {setting["name"]: setting for stage in info(server)["stages"] for setting in stage["settings"]}


def set_controls(page, values: dict) -> dict:
    """Move the controls to `values` (setting -> number); the values the page now holds, as it reads them."""
    for name, value in values.items():
        page.fill(control_id(name), str(value))
    return {name: float(page.input_value(control_id(name))) for name in values}


def config_for(values: dict, declared: dict[str, dict]) -> dict:
    """The config the server gets for these control values: each setting not at one of its "off" values."""
    return {
        name: int(value) if declared[name]["kind"] == "int" else value
        for name, value in values.items()
        if value not in declared[name]["off"]
    }


def server_after(server, prompt: str, config: dict, top: int = 50) -> tuple[dict, dict]:
    """The server's next-token distribution for `prompt`: {id: prob} raw and after the chain."""
    reply = httpx.post(f"{server.url}/api/next", json={"prompt": prompt, "config": config, "top": top}, timeout=60)
    reply.raise_for_status()
    after = {c["id"]: c["prob"] for c in reply.json()["next"]["after"]}
    raw = {c["id"]: c["prob"] for c in reply.json()["next"]["top"]}
    return raw, after


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
    second = page.locator("button.bar-row").nth(1)
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

    screenshot(page, "explorer")


@pytest.mark.parametrize(
    "sliders",
    [
        {"temperature": 1.3, "top_k": 40, "top_p": 0.9, "min_p": 0.02},
        {"temperature": 1.6, "top_p": 0.8},
        {"top_k": 12, "min_p": 0.05},
        {"temperature": 1.5, "top_n_sigma": 1.5, "top_p": 0.95},
        {"temperature": 1.2, "epsilon_cutoff": 0.001},
        {"temperature": 1.4, "eta_cutoff": 0.002},
    ],
    ids=lambda sliders: ",".join(sliders),
)
def test_page_chain_matches_server(server, page, sliders):
    declared = declared_settings(server)
    missing = [name for name in sliders if name not in declared]
    if missing:
        pytest.skip(f"this server has no {missing[0]} stage yet")
    prompt = "Once upon a time, in a small village,"
    start(page, server.url, prompt)
    values = set_controls(page, sliders)
    shown = bars(page)  # computed in the page: these stages all run there

    config = config_for(values, declared)
    assert page.evaluate("decodelab.samplerConfig()") == config
    raw, after = server_after(server, prompt, config)
    assert [bar["id"] for bar in shown] == list(raw)[:20]  # the model's own ranking
    for bar in shown:
        assert bar["raw"] == pytest.approx(raw[bar["id"]], abs=1e-4)
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar
    kept = sum(bar["post"] > 0 for bar in shown)
    assert 1 < kept  # the case is not trivial ...
    assert len(after) == kept or len(after) > 20  # ... and both agree on which tokens survive


CHAIN_CASES = [  # (probabilities of ids 0..3, sliders, expected probabilities after the page's chain)
    ([0.1, 0.2, 0.3, 0.4], {"top_p": 0.7}, [0, 0, 0.428571, 0.571429]),
    ([0.1, 0.2, 0.3, 0.4], {"top_k": 2}, [0, 0, 0.428571, 0.571429]),
    ([0.1, 0.2, 0.3, 0.4], {"min_p": 0.4}, [0, 0.222222, 0.333333, 0.444444]),
    ([0.1, 0.2, 0.3, 0.4], {"temperature": 0.5}, [0.033333, 0.133333, 0.3, 0.533333]),
    ([0.1, 0.2, 0.3, 0.4], {"temperature": 2, "top_p": 0.5}, [0, 0, 0.464102, 0.535898]),
    ([0.25, 0.25, 0.25, 0.25], {"top_k": 1}, [0.25, 0.25, 0.25, 0.25]),  # ties with the k-th stay
    ([0.1, 0.2, 0.3, 0.4], {"greedy": True}, [0, 0, 0, 1]),
    # top-nσ: logits ln p have mean -1.508072 and population std 0.520627 (max -0.916291)
    ([0.1, 0.2, 0.3, 0.4], {"top_n_sigma": 1}, [0, 0, 0.428571, 0.571429]),  # keeps logits >= -1.436918
    ([0.1, 0.2, 0.3, 0.4], {"top_n_sigma": 2}, [0, 0.222222, 0.333333, 0.444444]),  # >= -1.957545
    # ... on the temperature-scaled logits: T = 2 halves the std and the gaps alike, so the same two stay
    ([0.1, 0.2, 0.3, 0.4], {"temperature": 2, "top_n_sigma": 1}, [0, 0, 0.464102, 0.535898]),
    ([0.1, 0.2, 0.3, 0.4], {"epsilon_cutoff": 0.25}, [0, 0, 0.428571, 0.571429]),  # keeps p >= 0.25
    ([0.1, 0.2, 0.3, 0.4], {"epsilon_cutoff": 0.5}, [0, 0, 0, 1]),  # the top token always stays
    # eta: H = 1.279854 nats, so eta = min(0.2, sqrt(0.2) * exp(-H)) = min(0.2, 0.124355): keeps p >= 0.124
    ([0.1, 0.2, 0.3, 0.4], {"eta_cutoff": 0.2}, [0, 0.222222, 0.333333, 0.444444]),
    # eta = min(0.05, 0.062178) = 0.05: keeps all
    ([0.1, 0.2, 0.3, 0.4], {"eta_cutoff": 0.05}, [0.1, 0.2, 0.3, 0.4]),
]


def test_page_chain_on_hand_computed_distributions(server, page):
    page.goto(server.url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    declared = declared_settings(server)
    ran = 0
    for probs, sliders, expected in CHAIN_CASES:
        values = {name: value for name, value in sliders.items() if name != "greedy"}
        if any(name not in declared for name in values):
            continue  # a stage this server does not have (yet)
        got = page.evaluate(
            """([probs, values, greedy]) => {
            const logits = Float32Array.from(probs, Math.log);
            const order = Uint32Array.from(probs.keys()).sort((a, b) => logits[b] - logits[a] || a - b);
            const position = new Uint32Array(order.length);
            order.forEach((id, j) => { position[id] = j; });
            const plan = decodelab.chainPlan(values, greedy);
            if (!plan.local) throw new Error(`not run in the page: ${JSON.stringify(plan)}`);
            const chain = decodelab.runChain({logits, order, position}, plan);
            return probs.map((_, id) => chain.prob(id));
        }""",
            [probs, values, bool(sliders.get("greedy"))],
        )
        assert got == pytest.approx(expected, abs=1e-6), (probs, sliders)
        ran += 1
    assert ran >= 7


def test_every_declared_slider_has_a_control(server, page):
    """The controls come from /api/info: one per numeric setting with a slider, in the default order,
    labelled with the setting's name and help; a value that turns its stage off reads "off"."""
    page.goto(server.url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    served = info(server)
    stages = {stage["name"]: stage for stage in served["stages"]}
    assert served["default_order"] == [stage["name"] for stage in served["stages"]]
    declared = [
        {**setting, "stage": name}
        for name in served["default_order"]
        for setting in stages[name]["settings"]
        if setting["kind"] in ("float", "int") and setting["slider"]
    ]
    assert {"temperature", "top_k", "top_p", "min_p", "repetition_penalty"} <= {s["name"] for s in declared}
    shown = page.eval_on_selector_all("#sampler-controls input[type=range]", "inputs => inputs.map(i => i.id)")
    assert shown == [setting["name"].replace("_", "-") for setting in declared]  # all of them, in order
    local = page.evaluate("Object.fromEntries(decodelab.page.stages.map(s => [s.name, decodelab.runsLocally(s)]))")
    assert {name for name, runs in local.items() if runs} >= {"temperature", "top_k", "top_p", "min_p"}
    for setting in declared:
        control = page.locator(control_id(setting["name"]))
        low, high, step = setting["slider"]
        assert float(control.get_attribute("step")) == step
        assert float(control.get_attribute("min")) <= low and float(control.get_attribute("max")) >= high
        label = page.locator(f"label.slider[data-setting={setting['name']}]")
        assert setting["name"].replace("_", "-") in label.locator(".name").text_content()
        assert setting["help"] in label.get_attribute("title")
        assert ("computed by the server" in label.get_attribute("title")) == (not local[setting["stage"]])
        offs = [value for value in setting["off"] if isinstance(value, (int, float))]
        if not offs and setting["name"] == stages[setting["stage"]]["settings"][0]["name"]:
            offs = [low]  # a stage that is off only when unset is off at the slider's low end
        for off in offs:
            if low <= off <= high:
                page.fill(control_id(setting["name"]), str(off))
                shown_value = "0 (greedy)" if setting["name"] == "temperature" and off == 0 else "off"
                expect(page.locator(control_id(setting["name"]) + "-value")).to_have_text(shown_value)
    assert page.evaluate("decodelab.samplerConfig()") == {}  # every stage off: nothing to send


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


def test_a_stage_the_page_does_not_run_shows_the_servers_distribution(server, page):
    """repetition_penalty runs on the server only: with it on, the bars show the server's distribution for
    the session's text under the page's settings (and say so), a step draws from what is shown, and the
    next state is asked for again. Greedy keeps the penalty (it is not a warper), so the argmax is the server's."""
    prompt = "the cat and the dog and the cat and the dog and the"
    start(page, server.url, prompt)
    declared = declared_settings(server)
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    values = set_controls(page, {"temperature": 0.8, "top_k": 20, "repetition_penalty": 1.5})
    shown = bars(page, "server")
    expect(page.locator("#dist-summary")).to_contain_text("computed by the server")
    assert requests and all(url.endswith("/distribution") for url in requests), requests

    config = config_for(values, declared)
    assert config == {"temperature": 0.8, "top_k": 20, "repetition_penalty": 1.5}
    _, after = server_after(server, prompt, config)  # the same state: the prompt alone
    for bar in shown:
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar
    # The penalty matters here: the page's own stages alone would show another distribution.
    without = page.evaluate("""() => {
        const plan = decodelab.chainPlan({temperature: 0.8, top_k: 20}, false);
        const chain = decodelab.runChain(decodelab.page.dist, plan);
        return Array.from(decodelab.page.dist.order.slice(0, 20), (id) => chain.prob(id));
    }""")
    assert max(abs(bar["post"] - p) for bar, p in zip(shown, without)) > 0.01

    # A sample step draws from the distribution shown, under the same config; the new state is asked for.
    shown_by_id = {bar["id"]: bar["post"] for bar in shown}
    page.click("#sample-step")
    settle(page)
    state = page.evaluate("decodelab.page.state")
    assert state["config"]["repetition_penalty"] == 1.5 and state["config"]["top_k"] == 20
    last = state["steps"][-1]
    if last["id"] in shown_by_id:
        assert last["prob"] == pytest.approx(shown_by_id[last["id"]], abs=1e-4)
    ids = state["prompt"]["ids"] + [step["id"] for step in state["steps"]]
    shown = bars(page, "server")
    _, after = server_after(server, ids, config)
    for bar in shown:
        assert bar["post"] == pytest.approx(after.get(bar["id"], 0.0), abs=1e-4), bar

    # Greedy leaves out the warpers but keeps the penalty: the server's argmax gets it all.
    page.check("#greedy")
    shown = bars(page, "server")
    _, penalized = server_after(server, ids, {"repetition_penalty": 1.5})
    argmax = max(penalized, key=penalized.get)
    assert [bar["id"] for bar in shown if bar["post"] == 1] == [argmax]
    assert all(bar["post"] == 0 for bar in shown if bar["id"] != argmax)

    # Penalty off again: back to the page's own chain, without asking.
    page.uncheck("#greedy")
    page.fill("#repetition-penalty", "1")
    expect(page.locator("#repetition-penalty-value")).to_have_text("off")
    bars(page, "page")
    expect(page.locator("#dist-summary")).not_to_contain_text("computed by the server")
    expect(page.locator("#error")).to_be_hidden()
    screenshot(page, "explorer-server-stage")


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
    screenshot(page, "explorer-korean")


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
    expect(page.locator("button.bar-row")).to_have_count(20)


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
        expect(page.locator("button.bar-row")).to_have_count(20)
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


def set_constraint(page, kind: str, source: str = "") -> None:
    """Choose a kind in the constraint box, type its source and press Apply (as a person would)."""
    page.select_option("#constraint-kind", kind)
    if source:
        page.fill("#constraint-source", source)
    page.click("#constraint-apply")


def library_allowed(bundled, prompt: str, constraint, generated: list[int]) -> set[int]:
    """The token ids the library's own session under `constraint` allows after `generated`."""
    import torch

    from decodelab.generation_config import GenerationConfig
    from decodelab.session import Session

    session = Session(bundled, bundled.prompt_ids(prompt), GenerationConfig(constraint=constraint))
    for token in generated:
        session.append(token)
    return set(torch.isfinite(session.distribution(after_samplers=True).logits).nonzero()[:, 0].tolist())


def test_a_choice_constraint_strikes_out_what_it_forbids_and_the_output_matches(server, page, bundled):
    """The constraint box under the sliders: the grammar runs on the server, the bars strike through the
    tokens it forbids (the library's mask), the summary gives its count and removed mass, a step where the
    model's own top choice was forbidden is marked, and the output is one of the choices."""
    from decodelab.constraints import Constraint

    prompt, options = "The capital of France is", [" Lyon", " Marseille"]
    start(page, server.url, prompt)
    top = bars(page)[0]
    set_constraint(page, "choice", "\n".join(options))
    shown = bars(page, "server")
    allowed = library_allowed(bundled, prompt, Constraint.choice(options), [])
    forbidden = page.eval_on_selector_all(".bar-row.forbidden", "rows => rows.map(row => Number(row.dataset.id))")
    assert forbidden == [bar["id"] for bar in shown if bar["id"] not in allowed]
    assert top["id"] in forbidden  # " Paris", the model's own first choice
    assert all(bar["post"] == 0 for bar in shown if bar["id"] in forbidden)
    # The allowed tokens lie far down the model's ranking: the likeliest of them are shown after its top 20.
    extra = [bar for bar in shown[20:] if bar["id"] in allowed]
    assert extra and all(bar["rank"] > 20 and bar["post"] > 0 for bar in extra)
    assert sum(bar["post"] for bar in shown) > 0.9
    first = page.locator(".bar-row.forbidden").first
    assert "line-through" in first.locator(".chip").evaluate("chip => getComputedStyle(chip).textDecorationLine")
    expect(first.locator(".post-value")).to_have_text("forbidden")
    summary = page.locator("#dist-summary")
    report = page.evaluate("decodelab.page.server.reply.constraint")
    assert report["kept"] == len(allowed) and report["removed_top"] and 0.5 < report["removed_mass"] < 0.999
    stage = page.locator("#pipeline li[data-stage=constraint]")  # the chain drawn as a pipeline
    expect(stage.locator(".stage-name")).to_have_text("constraint (choice)")
    expect(stage.locator(".kept")).to_have_text(
        f"keeps {len(allowed)} · removes {100 * report['removed_mass']:.1f}% of the raw mass"
    )
    expect(summary).to_contain_text(f"{len(allowed)} of 49,152 tokens possible")
    expect(page.locator("#constraint-status")).to_have_text("applied")

    # Clicking a struck-out token asks to force it: the server refuses, in words, and nothing is appended.
    page.locator(".bar-row.forbidden").first.click()
    settle(page)
    expect(page.locator("#error")).to_contain_text("is forbidden here by the choice constraint")
    assert step_rows(page) == 0

    page.click("#greedy-step")
    settle(page)
    expect(page.locator("#steps tbody tr.overruled")).to_have_count(1)
    expect(page.locator("#steps .overruled-tag")).to_have_text("⊘ constraint")
    assert "top choice" in page.locator("#steps .overruled-tag").get_attribute("title")
    assert page.locator("#tokens .chip.overruled").count() == 1
    bars(page, "server")  # the next token's bars, under the same grammar
    screenshot(page, "explorer-constraint")

    page.fill("#generate-count", "10")
    page.click("#generate")
    settle(page)
    assert page.locator("#generated-text").text_content() in options
    expect(page.locator("#stop-reason")).to_contain_text("Stopped: constraint complete")
    assert page.evaluate("decodelab.page.state.config.constraint.kind") == "choice"
    expect(page.locator("#error")).to_be_hidden()


def test_a_korean_choice_constraint(server, page):
    """Hangul choices: SmolLM2 spells each syllable in byte tokens, and the grammar follows them byte by byte."""
    options = [" 서울", " 부산"]
    page.goto(server.url)
    expect(page.locator("#model-info")).to_contain_text("SmolLM2")
    page.select_option("#constraint-kind", "choice")
    page.fill("#constraint-source", "\n".join(options))
    expect(page.locator("#constraint-status")).to_have_text("edited: Apply to use it")
    page.fill("#prompt", "한국의 수도는")
    page.click("#start")  # Start takes the box as it is
    settle(page)
    bars(page, "server")
    page.fill("#generate-count", "12")
    page.click("#generate")
    settle(page)
    text = page.locator("#generated-text").text_content()
    assert text in options and "\ufffd" not in page.locator("#text").text_content()
    expect(page.locator("#stop-reason")).to_contain_text("constraint complete")
    screenshot(page, "explorer-constraint-korean")


def test_a_bad_constraint_shows_in_the_error_line(server, page):
    start(page, server.url, "The year is")
    set_constraint(page, "regex", "(unclosed")
    expect(page.locator("#error")).to_contain_text("the regex constraint does not compile")
    expect(page.locator("#error")).to_contain_text('invalid regex "(unclosed"')
    expect(page.locator("#dist-summary")).to_contain_text("the server could not compute")
    set_constraint(page, "regex", " [0-9]{4}")
    bars(page, "server")
    expect(page.locator("#error")).to_be_hidden()
    page.click("#greedy-step")
    settle(page)
    assert page.locator("#generated-text").text_content() == " "  # SmolLM2 spells digits one per token
    set_constraint(page, "json_schema", "{not json")
    expect(page.locator("#error")).to_contain_text("the JSON schema is not JSON")
    set_constraint(page, "none")
    bars(page, "page")  # no constraint, no server stage: the page's own chain again
    expect(page.locator("#error")).to_be_hidden()
