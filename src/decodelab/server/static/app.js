// decodelab web explorer: one session on the server, the sampler chain re-run here as the sliders move.
//
// The server sends the raw logits of the whole vocabulary with every state (base64 float32). This page
// applies temperature -> top_k -> top_p -> min_p to them exactly as decodelab/samplers.py does, so the bars
// change without a round trip, and a step sends the same settings so the server draws from what is shown.
"use strict";

const BARS = 20; // candidates shown, in the model's own (raw) order
const $ = (id) => document.getElementById(id);

const page = {
  state: null, // the session state from the server
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

async function api(path, body, method) {
  const headers = {};
  if (apiKey()) headers["Authorization"] = `Bearer ${apiKey()}`;
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

// ---------- the sampler chain, mirroring decodelab/samplers.py ----------

function decodeLogits(base64) {
  const binary = atob(base64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  const logits = new Float32Array(bytes.length / 4);
  for (let i = 0; i < logits.length; i++) logits[i] = view.getFloat32(4 * i, true); // little-endian
  return logits;
}

// Decode once per state: logits, token ids sorted by logit (descending), and the raw softmax.
function prepareDistribution(next) {
  const logits = decodeLogits(next.logits);
  const order = new Uint32Array(logits.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => logits[b] - logits[a] || a - b);
  const position = new Uint32Array(logits.length); // id -> place in `order`
  for (let j = 0; j < order.length; j++) position[order[j]] = j;
  const pieces = new Map(next.top.map((c) => [c.id, c.piece]));
  const raw = runChain({ logits, order, position }, { temperature: 1, topK: 0, topP: 1, minP: 0, greedy: false });
  return { logits, order, position, pieces, raw, entropy: next.entropy, top: next.top };
}

// The chain over one distribution. Every stage only removes tokens from the low end of the ranking
// (temperature > 0 keeps the order), so what survives is always a prefix of `order`: `kept` tokens.
// Returns {kept, stages: [{name, kept}], prob(id)} — prob is the softmax of the final logits, in doubles.
function runChain(dist, settings) {
  const { logits, order, position } = dist;
  const size = logits.length;
  if (settings.greedy || settings.temperature === 0) {
    // Greedy leaves out the reshaping stages and takes the argmax.
    return { kept: 1, greedy: true, stages: [{ name: "greedy", kept: 1 }], prob: (id) => (id === order[0] ? 1 : 0) };
  }
  // Temperature: logits / T with T rounded to float32, as torch divides a float32 tensor by a Python float
  // (dividing two float32 values in doubles and rounding once is exact). T = 1 is no stage at all.
  const t = settings.temperature;
  const t32 = Math.fround(t);
  const scaled = new Float64Array(size);
  for (let i = 0; i < size; i++) scaled[i] = t === 1 ? logits[i] : Math.fround(logits[i] / t32);
  const at = (j) => scaled[order[j]];
  const stages = [];
  if (t !== 1) stages.push({ name: "temperature", kept: size });
  let kept = size;

  // Top-k: keep logits >= the k-th largest (ties with it stay, as in transformers).
  if (settings.topK > 0) {
    const kth = at(Math.min(settings.topK, size) - 1);
    kept = Math.min(settings.topK, size);
    while (kept < size && at(kept) >= kth) kept++;
    stages.push({ name: "top_k", kept });
  }
  const softmaxOfPrefix = (n) => {
    const top = at(0);
    let total = 0;
    for (let j = 0; j < n; j++) total += Math.exp(at(j) - top);
    return (j) => Math.exp(at(j) - top) / total;
  };
  // Top-p: from the least likely up, drop tokens while the tail's mass stays <= 1 - p; the top token stays.
  if (settings.topP < 1) {
    const p = softmaxOfPrefix(kept);
    const limit = Math.fround(1 - settings.topP);
    let tail = 0;
    for (let j = kept - 1; j >= 1; j--) {
      tail += p(j);
      if (tail > limit) break;
      kept = j;
    }
    stages.push({ name: "top_p", kept });
  }
  // Min-p: drop tokens whose probability is below min_p times the top token's; the top token stays.
  if (settings.minP > 0) {
    const p = softmaxOfPrefix(kept);
    const threshold = settings.minP * p(0);
    let n = 1;
    while (n < kept && p(n) >= threshold) n++;
    kept = n;
    stages.push({ name: "min_p", kept });
  }
  const p = softmaxOfPrefix(kept);
  return { kept, greedy: false, stages, prob: (id) => (position[id] < kept ? p(position[id]) : 0) };
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

function hexBytes(hex) {
  return Uint8Array.from(hex.match(/../g) || [], (pair) => parseInt(pair, 16));
}

// The bytes behind a readable piece: text as UTF-8, each <0xNN> as one byte.
function pieceBytes(piece) {
  const out = [];
  const encoder = new TextEncoder();
  for (const part of String(piece).split(/(<0x[0-9A-Fa-f]{2}>)/)) {
    if (/^<0x[0-9A-Fa-f]{2}>$/.test(part)) out.push(parseInt(part.slice(3, 5), 16));
    else out.push(...encoder.encode(part));
  }
  return Uint8Array.from(out);
}

// For each token holding part of a character (byte-level BPE splits Korean syllables), the whole
// character(s) it helps to spell, found by widening its bytes to UTF-8 boundaries; "" for the others.
function characterHints(byteLists) {
  const stream = new Uint8Array(byteLists.reduce((n, bytes) => n + bytes.length, 0));
  const starts = [];
  let offset = 0;
  for (const bytes of byteLists) {
    starts.push(offset);
    stream.set(bytes, offset);
    offset += bytes.length;
  }
  const continuation = (i) => i < stream.length && (stream[i] & 0xc0) === 0x80;
  const decoder = new TextDecoder("utf-8", { fatal: false });
  return byteLists.map((bytes, index) => {
    let begin = starts[index];
    let end = begin + bytes.length;
    const partial = continuation(begin) || continuation(end) ||
      decoder.decode(bytes).includes("\ufffd");
    if (!partial || bytes.length === 0) return "";
    while (begin > 0 && continuation(begin)) begin--;
    while (continuation(end)) end++;
    return decoder.decode(stream.subarray(begin, end)).trim();
  });
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
    ...state.prompt.tokens.map((token) => ({ ...token, bytes: token.bytes ? hexBytes(token.bytes) : pieceBytes(token.piece) })),
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
    summary.textContent = page.state ? "The context is full: undo some tokens or start over." : "Start a prompt to see the next-token distribution.";
    return;
  }
  const dist = page.dist;
  const chain = runChain(dist, settings());
  const keptMass = dist.order.slice(0, chain.kept).reduce((sum, id) => sum + dist.raw.prob(id), 0);
  const stages = chain.stages.map((stage) => `${stage.name.replace("_", "-")} → ${stage.kept.toLocaleString("en")}`);
  summary.textContent = `entropy ${dist.entropy.toFixed(2)} nats · ` +
    (stages.length ? `${stages.join(" · ")} · ` : "no sampler stage · ") +
    `${chain.kept.toLocaleString("en")} of ${dist.logits.length.toLocaleString("en")} tokens possible, ${percent(keptMass)} of the raw mass`;

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
    label.append(element("span", "rank", String(j + 1)), chip(dist.pieces.has(id) ? dist.pieces.get(id) : `#${id}`, id));
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
  const state = await api("/api/sessions", body);
  if (page.state) api(`/api/sessions/${page.state.id}`, undefined, "DELETE").catch(() => {});
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
