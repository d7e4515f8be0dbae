// decodelab web explorer: the learner views the CLI has (`decodelab plot trace`, `compare`, `beam`), drawn under
// the page from the same records. Each redraws from the session state app.js announces (`decodelab:state`).
//
// - Step by step: each generated step's chosen-token probability, after the chain and raw, and the entropy of
//   the model's distribution at that step (Step.entropy), as an SVG chart; hover, tap or arrow keys pick a step.
// - Methods from here: POST /api/compare from the current position (the prompt and every step so far), the
//   continuations side by side, with the page's own settings as one of the strategies.
// - Beam tree from here: POST /api/beam from the same position; every candidate the search ranked, by step
//   (beam-tree.js draws it).
//
// Both requests send the position as token ids; a server whose /api/compare and /api/beam take only text
// (400 on `prompt`) gets the session's full text instead, re-tokenized there, and the panel says so.
// A reply for a session that is no longer the page's is dropped. Wrapped in a function: app.js's top-level
// names (page, $, api, ...) stay its own.
(() => {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const CHART = { height: 190, left: 40, right: 44, top: 12, bottom: 30, minStep: 9 };
  // The methods every comparison runs (compare's strategy words); the page's settings are added as "yours".
  const METHODS = "greedy; beam:4; temperature:0.7; top_k:40; top_p:0.9; min_p:0.05";
  const EXPLAIN = {
    greedy: "always the most likely token",
    beam: "keeps the K most likely sequences, returns the best",
    temperature: "samples the whole distribution, sharpened or flattened",
    top_k: "samples among the k most likely tokens",
    top_p: "samples from the smallest set holding p of the mass",
    min_p: "drops tokens below min_p × the top token's probability",
  };
  const WHITESPACE = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };

  const views = { root: null, busy: false, idsRefused: false, selected: null, stateId: null };
  const app = () => window.decodelab && window.decodelab.page;
  const byId = (id) => document.getElementById(id);

  function node(tag, className, text, id) {
    const made = document.createElement(tag);
    if (className) made.className = className;
    if (text !== undefined) made.textContent = text;
    if (id) made.id = id;
    return made;
  }

  function svg(tag, attributes, text) {
    const made = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) made.setAttribute(name, value);
    if (text !== undefined) made.textContent = text;
    return made;
  }

  function percent(p) {
    if (p === 0) return "0%";
    const value = 100 * p;
    return value >= 10 ? `${value.toFixed(1)}%` : value >= 0.1 ? `${value.toFixed(2)}%` : `${value.toPrecision(2)}%`;
  }

  const visible = (text) => String(text).replace(/[ \n\t\r]/g, (c) => WHITESPACE[c]);

  // ---------- the server (as app.js's api(): the API key from localStorage) ----------

  async function post(path, body) {
    const headers = { "Content-Type": "application/json" };
    const key = localStorage.getItem("decodelab-api-key") || "";
    if (key) headers.Authorization = `Bearer ${key}`;
    let response;
    try {
      response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
    } catch (error) {
      throw Object.assign(new Error(`cannot reach the server (${error.message})`), { status: 0 });
    }
    const payload = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = (payload && payload.error) || {};
      throw Object.assign(new Error(detail.message || `${path} failed with HTTP ${response.status}`),
        { status: response.status, param: detail.param });
    }
    return payload;
  }

  // The current position: the prompt's ids and every generated step's.
  function positionIds(state) {
    return [...state.prompt.ids, ...state.steps.map((step) => step.id)];
  }

  // POST `fields` with the position as `prompt`: ids, or the full text on a server that takes only text there.
  async function fromPosition(path, fields, state) {
    if (!views.idsRefused) {
      try {
        return { reply: await post(path, { ...fields, prompt: positionIds(state) }), asText: false };
      } catch (error) {
        if (!(error.status === 400 && error.param === "prompt")) throw error;
        views.idsRefused = true;
      }
    }
    return { reply: await post(path, { ...fields, prompt: state.full_text }), asText: true };
  }

  // ---------- bytes: what a token spells ----------

  function tokenBytes(token) {
    if (typeof token.bytes === "string") return hexBytes(token.bytes); // the prompt's rows: hex
    if (Array.isArray(token.bytes)) return Uint8Array.from(token.bytes); // a step's: numbers
    return pieceBytes(token.piece);
  }

  // A step's piece as a learner reads it: whitespace visible, and the character(s) a partial byte helps spell.
  function stepLabels(state) {
    const all = [...state.prompt.tokens, ...state.steps].map(tokenBytes);
    const hints = characterHints(all).slice(state.prompt.tokens.length);
    return state.steps.map((step, i) => ({ piece: visible(step.piece), hint: hints[i] }));
  }

  // ---------- the panels ----------

  function build() {
    const root = byId("learner-views");
    if (!root) return null;
    const empty = (tag, className, id) => node(tag, className, undefined, id);
    const legend = node("div", "lv-legend");
    for (const [kind, text] of [["chain", "chosen token, after the chain"], ["raw", "chosen token, raw"],
      ["entropy", "entropy (nats, right axis)"]]) {
      const key = node("span", "lv-key");
      key.append(node("span", `lv-swatch lv-${kind}`), text);
      legend.append(key);
    }
    root.replaceChildren(
      panel("lv-chart-panel", "Step by step",
        "each chosen token's probability (after the chain and raw) and the entropy of the model's distribution",
        legend, empty("div", "lv-scroll", "lv-chart"), empty("p", "lv-info", "lv-chart-info")),
      panel("lv-compare-panel", "Methods from here", "decoding methods side by side, each continuing the current text",
        controls("lv-compare", "Compare methods from here", [["lv-compare-n", "tokens", 12, 1, 64]]),
        empty("p", "lv-status", "lv-compare-status"), empty("div", "lv-scroll", "lv-compare-box")),
      panel("lv-beam-panel", "Beam tree from here",
        "every candidate beam search ranked; kept beams bold, pruned ones faded, ★ the best",
        controls("lv-beam", "Beam tree from here",
          [["lv-beam-k", "beams", 3, 2, 8], ["lv-beam-n", "tokens", 6, 1, 16]]),
        empty("p", "lv-status", "lv-beam-status"), empty("div", "lv-scroll", "lv-beam-box"),
        empty("p", "lv-info", "lv-beam-best"), empty("p", "lv-info", "lv-beam-info")));
    byId("lv-compare").addEventListener("click", () => run("compare", runCompare));
    byId("lv-beam").addEventListener("click", () => run("beam", runBeam));
    return root;
  }

  function panel(id, title, subtitle, ...content) {
    const heading = node("div", "panel-title", title);
    heading.append(" ", node("span", "muted", `— ${subtitle}`));
    const box = node("div", "panel lv-panel", undefined, id);
    box.append(heading, ...content);
    return box;
  }

  function controls(buttonId, label, numbers) {
    const row = node("div", "lv-controls");
    const button = node("button", "", label);
    Object.assign(button, { id: buttonId, type: "button", disabled: true });
    row.append(button);
    for (const [id, name, value, min, max] of numbers) {
      const input = node("input");
      Object.assign(input, { id, type: "number", value, min, max, step: 1 });
      const wrap = node("label", "lv-number", `${name} `);
      wrap.append(input);
      row.append(wrap);
    }
    return row;
  }

  function readNumber(id) {
    const input = byId(id);
    const value = Math.round(Number(input.value));
    if (!Number.isFinite(value) || value < Number(input.min) || value > Number(input.max)) {
      throw new Error(`${input.parentElement.textContent.trim()} must be a whole number from ${input.min} to ` +
        `${input.max}, got ${input.value || "nothing"}`);
    }
    return value;
  }

  function status(id, text, isError) {
    const target = byId(id);
    target.textContent = text ? String(text).split("\n")[0] : "";
    target.title = text || "";
    target.classList.toggle("lv-error", Boolean(isError));
  }

  function updateButtons() {
    const page = app();
    const off = views.busy || document.body.dataset.busy === "1" || !page || !page.state;
    for (const id of ["lv-compare", "lv-beam"]) byId(id).disabled = off;
    views.root.dataset.busy = views.busy ? "1" : "0";
  }

  // One request at a time; its reply is shown only while its session is still the page's.
  async function run(which, request) {
    const page = app();
    if (views.busy || !page || !page.state) return;
    const state = page.state;
    views.busy = true;
    updateButtons();
    status(`lv-${which}-status`, "asking the server…");
    try {
      const drawn = await request(state);
      if (page.state && page.state.id === state.id) drawn();
    } catch (error) {
      if (page.state && page.state.id === state.id) status(`lv-${which}-status`, error.message, true);
    } finally {
      views.busy = false;
      updateButtons();
    }
  }

  // Where a view's request started, and what it did not take from the page.
  function fromWhere(state, asText) {
    const at = state.steps.length ? `after step ${state.steps.length}` : "from the prompt";
    const constrained = Boolean(window.decodelab.pageConfig().constraint);
    return at + (asText ? " · sent as text (this server's route takes no token ids), re-tokenized there" : "") +
      (constrained ? " · without the page's constraint (this route takes none)" : "");
  }

  // ---------- 1. the per-step chart ----------

  function drawChart(state) {
    const box = byId("lv-chart");
    const steps = state.steps;
    box.replaceChildren();
    if (!steps.length) {
      box.append(node("p", "muted lv-empty", "Step or generate: each chosen token appears here."));
      status("lv-chart-info", "");
      return;
    }
    const labels = stepLabels(state);
    const { height, left, right, top, bottom } = CHART;
    const width = Math.max(box.clientWidth || 320, left + right + steps.length * CHART.minStep);
    const dx = (width - left - right) / steps.length;
    const plot = height - top - bottom;
    const maxEntropy = Math.max(1, Math.ceil(Math.max(...steps.map((step) => step.entropy || 0))));
    const x = (i) => left + (i + 0.5) * dx;
    const yProb = (p) => top + (1 - p) * plot;
    const yEntropy = (h) => top + (1 - h / maxEntropy) * plot;
    const chart = svg("svg", { width, height, class: "lv-chart-svg", tabindex: 0, role: "img",
      "aria-label": `probability and entropy of ${steps.length} steps; arrow keys move between steps` });

    for (const p of [0, 0.5, 1]) { // grid and both axes' ticks
      chart.append(svg("line", { x1: left, x2: width - right, y1: yProb(p), y2: yProb(p), class: "lv-grid" }),
        svg("text", { x: left - 4, y: yProb(p) + 4, class: "lv-tick", "text-anchor": "end" }, `${100 * p}%`),
        svg("text", { x: width - right + 4, y: yProb(p) + 4, class: "lv-tick lv-entropy-text" },
          (maxEntropy * p).toFixed(maxEntropy * p % 1 ? 1 : 0)));
    }
    const every = Math.ceil(steps.length / Math.max(1, Math.floor((width - left - right) / 28)));
    steps.forEach((step, i) => {
      if (i % every === 0 || i === steps.length - 1) {
        chart.append(svg("text", { x: x(i), y: height - bottom + 14, class: "lv-tick", "text-anchor": "middle" },
          String(i + 1)));
      }
    });
    chart.append(
      svg("text", { x: (left + width - right) / 2, y: height - 2, class: "lv-axis", "text-anchor": "middle" }, "step"),
      svg("text", { x: 10, y: top + plot / 2, class: "lv-axis", "text-anchor": "middle",
        transform: `rotate(-90 10 ${top + plot / 2})` }, "probability"),
      svg("text", { x: width - 8, y: top + plot / 2, class: "lv-axis lv-entropy-text", "text-anchor": "middle",
        transform: `rotate(90 ${width - 8} ${top + plot / 2})` }, "entropy"));

    const series = [ // raw (dashed) over the chain's line: where they are equal both stay visible
      ["chain", (step) => step.prob, yProb],
      ["raw", (step) => step.raw_prob, yProb],
      ["entropy", (step) => step.entropy, yEntropy],
    ];
    for (const [kind, value, y] of series) {
      const known = steps.map((step, i) => [i, value(step)]).filter(([, v]) => typeof v === "number");
      chart.append(svg("polyline", { class: `lv-line lv-${kind}`,
        points: known.map(([i, v]) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ") }));
      for (const [i, v] of known) {
        chart.append(svg("circle", { class: `lv-point lv-${kind}`, cx: x(i), cy: y(v), r: dx > 14 ? 3.5 : 2.5,
          "data-step": i, "data-value": v }));
      }
    }
    steps.forEach((step, i) => { // a band per step catches hover and tap over the whole height
      const band = svg("rect", { x: left + i * dx, y: top, width: dx, height: plot, class: "lv-band", "data-step": i });
      band.append(svg("title", {}, chartText(step, labels[i])));
      band.addEventListener("pointerenter", () => selectStep(i));
      band.addEventListener("click", () => selectStep(i));
      chart.append(band);
    });
    chart.addEventListener("keydown", (event) => {
      const move = { ArrowLeft: -1, ArrowRight: 1 }[event.key];
      if (!move) return;
      event.preventDefault();
      selectStep(Math.min(steps.length - 1, Math.max(0, (views.selected ?? steps.length) + move)));
    });
    box.append(chart);
    box.scrollLeft = box.scrollWidth; // the newest step in sight
    selectStep(steps.length - 1); // the newest step, until the learner picks another
  }

  function chartText(step, label) {
    return `step ${step.step + 1}: “${label.piece}”${label.hint ? ` (part of “${label.hint}”)` : ""} · ` +
      `${percent(step.prob)} after the chain · ${percent(step.raw_prob)} raw · rank ${step.rank}` +
      (typeof step.entropy === "number" ? ` · entropy ${step.entropy.toFixed(2)} nats` : "");
  }

  function selectStep(i) {
    const state = app().state;
    if (!state || !state.steps[i]) return;
    views.selected = i;
    for (const band of document.querySelectorAll("#lv-chart .lv-band")) {
      band.classList.toggle("lv-selected", Number(band.dataset.step) === i);
    }
    const info = byId("lv-chart-info");
    info.textContent = chartText(state.steps[i], stepLabels(state)[i]);
    info.dataset.step = i;
  }

  // ---------- 2. methods side by side ----------

  // The page's sampler settings as compare's strategy words ("temperature:0.8,top_p:0.9"), or null when they
  // are greedy (a method already in the table). A constraint is not a strategy word: /api/compare runs without.
  function yourStrategy() {
    const { settings, pageConfig } = window.decodelab;
    const config = pageConfig();
    if (settings().greedy || config.temperature === 0) return null;
    const words = Object.entries(config).filter(([, value]) => typeof value === "number");
    return words.map(([name, value]) => `${name}:${value}`).join(",") || "temperature:1";
  }

  async function runCompare(state) {
    const n = readNumber("lv-compare-n");
    const yours = yourStrategy();
    const strategies = METHODS + (yours && !METHODS.split("; ").includes(yours) ? `; ${yours}` : "");
    const seed = window.decodelab.seedValue() ?? 0; // the page's seed field, as its own steps use it
    const { reply, asText } = await fromPosition("/api/compare", { strategies, max_new_tokens: n, seed }, state);
    return () => {
      drawCompare(reply.outcomes, yours);
      status("lv-compare-status", `${n} tokens ${fromWhere(state, asText)} · sampled with seed ${seed}`);
    };
  }

  function drawCompare(outcomes, yours) {
    const table = node("table", "lv-compare-table");
    const head = node("tr");
    head.append(node("th", "", ""));
    for (const outcome of outcomes) {
      const th = node("th");
      const word = outcome.strategy.split(/[:,]/)[0];
      th.append(node("span", "lv-method", outcome.strategy === yours ? `yours: ${outcome.strategy}` : outcome.strategy),
        node("span", "lv-explain", outcome.strategy === yours ? "the page's sampler settings" : EXPLAIN[word] || ""));
      head.append(th);
    }
    table.append(node("thead"), node("tbody"));
    table.tHead.append(head);
    const rows = [
      ["continuation", (o) => o.text, "lv-text"],
      ["tokens", (o) => String(o.token_ids.length)],
      ["log-probability", (o) => o.logprob.toFixed(2)],
      ["perplexity", (o) => (o.perplexity === null ? "—" : o.perplexity.toFixed(2))],
      ["mean entropy", (o) => (o.mean_entropy === null ? "—" : o.mean_entropy.toFixed(2))],
      ["stopped by", (o) => o.stop_reason],
    ];
    for (const [name, show, className] of rows) {
      const row = node("tr");
      row.append(node("th", "", name));
      for (const outcome of outcomes) {
        const cell = node("td", className || "lv-num", show(outcome));
        if (className) {
          Object.assign(cell.dataset, { strategy: outcome.strategy, ids: JSON.stringify(outcome.token_ids) });
        }
        row.append(cell);
      }
      table.tBodies[0].append(row);
    }
    byId("lv-compare-box").replaceChildren(table);
  }

  // ---------- 3. the beam tree ----------

  async function runBeam(state) {
    if (!window.decodelabBeamTree) throw new Error("beam-tree.js is not loaded: index.html needs its script tag");
    const body = { num_beams: readNumber("lv-beam-k"), max_new_tokens: readNumber("lv-beam-n") };
    const { reply, asText } = await fromPosition("/api/beam", body, state);
    return () => {
      // the position's last bytes: a node may finish a character they begin
      const tail = [...state.prompt.tokens, ...state.steps].slice(-3).map((token) => Array.from(tokenBytes(token)));
      const pick = (text) => status("lv-beam-info", text);
      const tree = window.decodelabBeamTree.draw(reply.tree, Uint8Array.from(tail.flat()), pick);
      byId("lv-beam-box").replaceChildren(tree);
      const ended = reply.tree.stop_reason.replaceAll("_", " ");
      status("lv-beam-status", `${body.num_beams} beams, ${body.max_new_tokens} tokens ${fromWhere(state, asText)} · ` +
        `the model's own log-probabilities (no sampler settings) · ended: ${ended}`);
      const best = reply.sequences[0];
      const line = byId("lv-beam-best");
      line.textContent = best ? `★ best: “${best.text}” · score ${best.score.toFixed(3)}` : "no beam finished";
      line.dataset.ids = JSON.stringify(best ? best.token_ids : []);
      status("lv-beam-info", "tap a node for its numbers");
    };
  }

  // ---------- wiring ----------

  function showState(state) {
    if (state.id !== views.stateId) { // another session: the old comparisons are not about this text
      views.stateId = state.id;
      for (const id of ["lv-compare-box", "lv-beam-box"]) byId(id).replaceChildren();
      for (const id of ["lv-compare-status", "lv-beam-status", "lv-beam-best", "lv-beam-info"]) status(id, "");
      delete byId("lv-beam-best").dataset.ids;
    }
    drawChart(state);
    updateButtons();
  }

  function setUp() {
    views.root = build();
    if (!views.root) return;
    document.addEventListener("decodelab:state", (event) => showState(event.detail.state));
    new MutationObserver(updateButtons).observe(document.body, { attributes: true, attributeFilter: ["data-busy"] });
    let width = window.innerWidth;
    window.addEventListener("resize", () => {
      const page = app();
      if (window.innerWidth !== width && page && page.state) drawChart(page.state);
      width = window.innerWidth;
    });
    const page = app();
    if (page && page.state) showState(page.state);
    updateButtons();
  }

  setUp();
})();
