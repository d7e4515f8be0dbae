// decodelab web explorer: one session on the server, the sampler chain re-run here as the sliders move.
//
// The server sends the raw logits of the whole vocabulary with every state (base64 float32). chain.js
// applies temperature -> top_k -> top_p -> min_p to them exactly as decodelab/samplers.py does, so the bars
// change without a round trip, and a step sends the same settings so the server draws from what is shown.
// utf8.js finds which character a partial-byte token helps to spell.
"use strict";

const BARS = 20; // candidates shown, in the model's own (raw) order
const $ = (id) => document.getElementById(id);

const page = {
  state: null, // the session state from the server
  secret: null, // that session's secret: the server answers only to the client that started it
  dist: null, // the prepared next-token distribution of that state (see prepareDistribution)
  promptText: "", // the decoded prompt, taken when the session starts
  lastGenerate: null, // {asked, got} of the last Generate N, for the stop line
};

// ---------- the server ----------

function apiKey() {
  return localStorage.getItem("decodelab-api-key") || "";
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function api(path, body, method, secret = page.secret) {
  const headers = {};
  if (apiKey()) headers["Authorization"] = `Bearer ${apiKey()}`;
  // A session answers only to the client that started it: its secret came back when it was created.
  if (secret && path.startsWith("/api/sessions/")) headers["X-Session-Secret"] = secret;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method: method || (body === undefined ? "GET" : "POST"),
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(`cannot reach the server (${error.message}): is decodelab serve still running?`, 0);
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (error) {
    payload = null;
  }
  if (!response.ok) {
    const message = payload && payload.error && payload.error.message;
    if (response.status === 401) $("key-box").hidden = false;
    throw new ApiError(message || `${path} failed with HTTP ${response.status}`, response.status);
  }
  return payload;
}

function showError(message) {
  const line = $("error");
  line.textContent = message ? String(message).split("\n")[0] : "";
  line.title = message ? String(message) : "";
  line.hidden = !message;
}

// Run one user action: buttons off while it runs, its error (if any) on the error line.
async function action(run) {
  document.body.dataset.busy = "1";
  updateButtons();
  try {
    showError("");
    await run();
  } catch (error) {
    showError(error.message);
    if (!(error instanceof ApiError)) console.error(error);
  } finally {
    document.body.dataset.busy = "0";
    updateButtons();
  }
}

// ---------- the sliders ----------

function settings() {
  return {
    temperature: Number($("temperature").value),
    topK: Number($("top-k").value),
    topP: Number($("top-p").value),
    minP: Number($("min-p").value),
    greedy: $("greedy").checked,
  };
}

// The GenerationConfig fields for the server: the same chain the bars show (0 / 1 mean "off").
function samplerConfig() {
  const s = settings();
  return {
    temperature: s.temperature,
    top_k: s.topK > 0 ? s.topK : null,
    top_p: s.topP < 1 ? s.topP : null,
    min_p: s.minP > 0 ? s.minP : null,
  };
}

function showSliderValues() {
  const s = settings();
  $("temperature-value").textContent = s.temperature === 0 ? "0 (greedy)" : s.temperature.toFixed(2);
  $("top-k-value").textContent = s.topK > 0 ? String(s.topK) : "off";
  $("top-p-value").textContent = s.topP < 1 ? s.topP.toFixed(2) : "off";
  $("min-p-value").textContent = s.minP > 0 ? s.minP.toFixed(2) : "off";
}

// ---------- rendering ----------

function percent(p) {
  if (p === 0) return "0%";
  const value = 100 * p;
  if (value >= 10) return `${value.toFixed(1)}%`;
  if (value >= 0.1) return `${value.toFixed(2)}%`;
  return `${value.toPrecision(2)}%`;
}

const WHITESPACE = { " ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍" };

// A piece with its spaces, newlines and partial-character bytes made visible.
function pieceNode(piece) {
  const node = document.createElement("span");
  node.className = "piece";
  for (const part of String(piece).split(/(<0x[0-9A-Fa-f]{2}>|[ \n\t\r])/)) {
    if (!part) continue;
    if (WHITESPACE[part]) {
      node.append(element("span", "ws", WHITESPACE[part]));
    } else if (/^<0x[0-9A-Fa-f]{2}>$/.test(part)) {
      node.append(element("span", "byte", part));
    } else {
      node.append(part);
    }
  }
  return node;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function chip(piece, id, classes, title) {
  const node = element("span", `chip ${classes || ""}`.trim());
  node.append(pieceNode(piece), element("span", "id", String(id)));
  node.dataset.id = id;
  if (title) node.title = title;
  return node;
}

function renderState() {
  const state = page.state;
  $("prompt-text").textContent = page.promptText;
  $("generated-text").textContent = state.text;
  $("counts").textContent = `— ${state.prompt.ids.length} prompt tokens + ${state.steps.length} generated`;

  const tokens = $("tokens");
  tokens.replaceChildren();
  const all = [
    ...state.prompt.tokens.map((token) => ({
      ...token, bytes: token.bytes ? hexBytes(token.bytes) : pieceBytes(token.piece),
    })),
    ...state.steps.map((step) => ({ ...step, bytes: pieceBytes(step.piece), generated: true })),
  ];
  const hints = characterHints(all.map((token) => token.bytes));
  all.forEach((token, index) => {
    let title;
    let classes;
    if (token.generated) {
      classes = `generated${token.forced ? " forced" : ""}`;
      title = `step ${token.step + 1}: ${percent(token.prob)} after the chain, ${percent(token.raw_prob)} raw, ` +
        `rank ${token.rank}${token.forced ? " (appended by hand)" : ""}`;
    } else {
      classes = `prompt${token.special ? " special" : ""}`;
      title = `${token.special ? "special" : "prompt"} token ${token.id}`;
    }
    title += ` · bytes ${Array.from(token.bytes, (b) => b.toString(16).padStart(2, "0")).join(" ")}`;
    if (hints[index]) title += ` · part of “${hints[index]}”`;
    const node = chip(token.piece, token.id, classes, title);
    if (token.generated) node.style.setProperty("--p", token.raw_prob.toFixed(3));
    tokens.append(node);
  });

  const rows = $("steps").tBodies[0];
  rows.replaceChildren();
  for (const step of state.steps) {
    const row = document.createElement("tr");
    if (step.forced) row.className = "forced";
    const cell = (content, className) => {
      const td = element("td", className);
      td.append(content);
      row.append(td);
    };
    cell(String(step.step + 1), "num");
    cell(chip(step.piece, step.id, step.forced ? "generated forced" : "generated"));
    cell(String(step.id), "num");
    cell(percent(step.prob), "num");
    cell(percent(step.raw_prob), "num");
    cell(String(step.rank), "num");
    const alternatives = element("span", "alternatives");
    for (const alt of step.raw_top.slice(0, 4)) {
      const item = element("span", alt.id === step.id ? "alternative chosen" : "alternative");
      item.append(pieceNode(alt.piece), ` ${percent(alt.prob)}`);
      alternatives.append(item);
    }
    cell(alternatives);
    rows.append(row);
  }

  renderStopLine();
  page.dist = state.next ? prepareDistribution(state.next) : null;
  renderBars();
}

function renderStopLine() {
  const state = page.state;
  const line = $("stop-reason");
  const done = page.lastGenerate;
  let text = "";
  if (state.stop_reason) {
    const reason = state.stop_reason;
    const last = state.steps[state.steps.length - 1];
    const what = reason.kind === "stop_token" && last ? ` (${last.piece})` : "";
    text = `Stopped: ${reason.text}${what}.`;
    if (done) text = `Generated ${done.got} of ${done.asked}. ${text}`;
  } else if (done) {
    text = `Generated ${done.got} of ${done.asked}; no stop reason yet.`;
  }
  line.textContent = text;
  line.classList.toggle("stopped", Boolean(state.stop_reason));
}

function renderBars() {
  const list = $("bars");
  const summary = $("dist-summary");
  list.replaceChildren();
  if (!page.dist) {
    summary.textContent = page.state
      ? "The context is full: undo some tokens or start over."
      : "Start a prompt to see the next-token distribution.";
    return;
  }
  const dist = page.dist;
  const chain = runChain(dist, settings());
  const keptMass = dist.order.slice(0, chain.kept).reduce((sum, id) => sum + dist.raw.prob(id), 0);
  const count = (n) => n.toLocaleString("en");
  const stages = chain.stages.map((stage) => `${stage.name.replace("_", "-")} → ${count(stage.kept)}`);
  summary.textContent = `entropy ${dist.entropy.toFixed(2)} nats · ` +
    (stages.length ? `${stages.join(" · ")} · ` : "no sampler stage · ") +
    `${count(chain.kept)} of ${count(dist.logits.length)} tokens possible, ${percent(keptMass)} of the raw mass`;

  const shown = Math.min(BARS, dist.logits.length);
  const largest = Math.max(dist.raw.prob(dist.order[0]), chain.prob(dist.order[0]));
  for (let j = 0; j < shown; j++) {
    const id = dist.order[j];
    const raw = dist.raw.prob(id);
    const post = chain.prob(id);
    const removed = post === 0;
    const item = document.createElement("li");
    const row = element("button", `bar-row${removed ? " removed" : ""}`);
    row.type = "button";
    row.dataset.id = id;
    row.dataset.rank = j + 1;
    row.dataset.raw = raw;
    row.dataset.post = post;
    row.title = `append token ${id}`;
    const label = element("span", "label");
    const piece = dist.pieces.has(id) ? dist.pieces.get(id) : `#${id}`;
    label.append(element("span", "rank", String(j + 1)), chip(piece, id));
    const bars = element("span", "bars-cell");
    const rawBar = element("span", "bar raw");
    rawBar.style.width = `${(100 * raw) / largest}%`;
    const postBar = element("span", "bar post");
    postBar.style.width = `${(100 * post) / largest}%`;
    bars.append(rawBar, postBar);
    const numbers = element("span", "numbers");
    numbers.append(element("span", "raw-value", percent(raw)),
      element("span", "post-value", removed ? (chain.greedy ? "—" : "removed") : percent(post)));
    row.append(label, bars, numbers);
    row.addEventListener("click", () => action(() => appendToken(id)));
    item.append(row);
    list.append(item);
  }
}

function updateButtons() {
  const busy = document.body.dataset.busy === "1";
  const live = Boolean(page.state);
  const canStep = live && Boolean(page.state.next);
  $("start").disabled = busy;
  $("greedy-step").disabled = busy || !canStep;
  const greedy = settings().greedy || settings().temperature === 0;
  $("sample-step").disabled = busy || !canStep || greedy;
  $("sample-step").title = greedy ? "greedy is on (checkbox or temperature 0): every step takes the argmax" : "";
  $("generate").disabled = busy || !canStep;
  $("undo").disabled = busy || !live || page.state.steps.length === 0;
  for (const row of document.querySelectorAll(".bar-row")) row.disabled = busy;
}

// ---------- actions ----------

async function start() {
  const prompt = $("prompt").value;
  const body = { prompt, chat: $("chat").checked, config: samplerConfig() };
  if (body.chat && $("system").value.trim()) body.system = $("system").value;
  const old = page.state ? { id: page.state.id, secret: page.secret } : null;
  let state;
  try {
    state = await api("/api/sessions", body);
  } catch (error) {
    if (error.status !== 429 || !old) throw error;
    // The server holds as many sessions as it may: give back this page's own, then try once more.
    await api(`/api/sessions/${old.id}`, undefined, "DELETE", old.secret).catch(() => {});
    old.id = null;
    state = await api("/api/sessions", body);
  }
  if (old && old.id) api(`/api/sessions/${old.id}`, undefined, "DELETE", old.secret).catch(() => {});
  page.secret = state.secret;
  page.state = state;
  page.promptText = state.full_text;
  page.lastGenerate = null;
  renderState();
}

function stepBody(greedy) {
  return { greedy: greedy || settings().greedy || settings().temperature === 0, config: samplerConfig() };
}

async function step(greedy) {
  const { state } = await api(`/api/sessions/${page.state.id}/step`, stepBody(greedy));
  page.state = state;
  page.lastGenerate = null;
  renderState();
}

async function generate() {
  const count = Math.max(1, Math.min(512, Math.round(Number($("generate-count").value) || 1)));
  const { steps, state } = await api(`/api/sessions/${page.state.id}/generate`, { count, ...stepBody(false) });
  page.state = state;
  page.lastGenerate = { asked: count, got: steps.length };
  renderState();
}

async function appendToken(id) {
  const { state } = await api(`/api/sessions/${page.state.id}/append`, { token_id: id });
  page.state = state;
  page.lastGenerate = null;
  renderState();
}

async function undo() {
  const { state } = await api(`/api/sessions/${page.state.id}/undo`, { count: 1 });
  page.state = state;
  page.lastGenerate = null;
  renderState();
}

async function connect() {
  let info;
  try {
    info = await api("/api/info");
  } catch (error) {
    $("model-info").textContent = error.status === 401 ? "this server needs its API key" : "not connected";
    throw error;
  }
  $("key-box").hidden = true;
  $("model-info").textContent = `${info.model} · context ${info.context_length.toLocaleString("en")} tokens · ` +
    `vocabulary ${info.vocab_size.toLocaleString("en")}` + (info.chat_template ? " · chat template" : "");
  $("chat").disabled = !info.chat_template;
}

function setUp() {
  for (const id of ["temperature", "top-k", "top-p", "min-p", "greedy"]) {
    $(id).addEventListener("input", () => {
      showSliderValues();
      renderBars(); // local only: no request
      updateButtons();
    });
  }
  $("chat").addEventListener("change", () => {
    $("system").hidden = !$("chat").checked;
  });
  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    action(start);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      action(start);
    }
  });
  $("greedy-step").addEventListener("click", () => action(() => step(true)));
  $("sample-step").addEventListener("click", () => action(() => step(false)));
  $("generate").addEventListener("click", () => action(generate));
  $("undo").addEventListener("click", () => action(undo));
  $("key-box").addEventListener("submit", (event) => {
    event.preventDefault();
    localStorage.setItem("decodelab-api-key", $("api-key").value.trim());
    action(connect);
  });
  $("api-key").value = apiKey();
  showSliderValues();
  renderBars();
  action(connect);
}

// For tests and the curious: the chain as the page runs it.
window.decodelab = { runChain, settings, page };

setUp();
