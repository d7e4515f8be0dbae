// decodelab web explorer: one session on the server, the sampler chain re-run here as the sliders move.
//
// The sampler controls are built from /api/info's stage list (the server's registry): one slider per numeric
// setting that declares a slider, in the default order. The server sends the raw logits of the whole
// vocabulary with every state (base64 float32); when every stage that is on is one chain.js runs, the page
// applies them itself, so the bars change without a round trip. Otherwise it asks the server for the
// distribution after the chain (POST /api/sessions/{id}/distribution) and says so. A step sends the same
// settings, so the server draws from what is shown. utf8.js finds which character a partial-byte token
// helps to spell.
//
// A constraint (the box under the sliders: a JSON schema, a regex, a choice, ...) is a stage that always runs
// on the server, first in the chain: it goes with every request as `config.constraint`, the bars then show
// the server's distribution, and the tokens its grammar forbids are struck through as "forbidden".
//
// On a remote model (`decodelab serve --model http://...`) the server behind told only its top tokens: the
// bars are those, then one "rest (not known)" bar for the mass it did not tell, which no step can draw; the
// entropy is shown as its bounds.
"use strict";

const BARS = 20; // candidates shown, in the model's own (raw) order
const KEPT_BARS = 10; // at most this many more: tokens the server's chain keeps beyond the first BARS (a grammar's)
const SCALAR_KINDS = ["float", "int"]; // setting kinds a slider can set
const GREEDY_SETTING = "temperature"; // 0 means greedy (GenerationConfig.is_greedy)
const SERVER_DELAY_MS = 120; // wait for the sliders to rest before asking the server
const $ = (id) => document.getElementById(id);

const page = {
  state: null, // the session state from the server
  secret: null, // that session's secret: the server answers only to the client that started it
  dist: null, // the prepared next-token distribution of that state (see prepareDistribution)
  promptText: "", // the decoded prompt, taken when the session starts
  lastGenerate: null, // {asked, got} of the last Generate N, for the stop line
  stages: [], // /api/info's stages, in the default order
  controls: [], // one per slider: {setting, stage, input, output}
  version: 0, // counts the states shown, so a late answer from the server is not shown for a newer state
  server: null, // the server's distribution for the bars: {key, reply, error, timer}
  constraint: null, // the constraint applied (Start or Apply): {kind, source} as config.constraint, or null
};

// The constraint kinds the page can set, as /api/info lists them (`constraint_kinds`); how each reads the box.
const CONSTRAINT_KINDS = {
  json_schema: {
    label: "JSON schema",
    hint: "JSON valid under this JSON Schema.",
    example: '{"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}',
  },
  json_object: { label: "JSON object", hint: "Any JSON object.", noSource: true },
  regex: {
    label: "regex",
    hint: "The whole output matches this regular expression (Rust syntax; a leading space counts).",
    example: " [0-9]{4}-[0-9]{2}-[0-9]{2}",
  },
  choice: {
    label: "choice",
    hint: "Exactly one of these, one per line, as typed (' Paris' starts with a space).",
    example: " Paris\n Lyon\n 서울",
    source: (text) => text.split("\n").map((line) => line.replace(/\r$/, "")).filter((line) => line !== ""),
  },
  grammar: {
    label: "grammar",
    hint: "A sentence of this context-free grammar: Lark (start: ...) or GBNF (root ::= ...).",
    example: 'start: num " + " num " = " num\nnum: /[0-9]{1,3}/',
  },
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

// ---------- the sampler controls ----------

// One slider per numeric setting that declares one (low, high, step), stages in the default order.
function buildControls(info) {
  const byName = new Map(info.stages.map((stage) => [stage.name, stage]));
  page.stages = info.default_order.map((name) => byName.get(name)).filter(Boolean).map((stage) => ({
    ...stage, settings: stage.settings.map((setting, index) => ({ ...setting, offValues: offValues(setting, index) })),
  }));
  page.controls = [];
  const box = $("sampler-controls");
  box.replaceChildren();
  for (const stage of page.stages) {
    const local = runsLocally(stage);
    for (const setting of stage.settings) {
      if (!SCALAR_KINDS.includes(setting.kind) || !setting.slider) continue;
      const [low, high, step] = setting.slider;
      const id = setting.name.replaceAll("_", "-");
      const value = initialValue(setting);
      const input = document.createElement("input");
      Object.assign(input, { id, type: "range", min: Math.min(low, value), max: Math.max(high, value), step });
      input.value = value;
      input.dataset.stage = stage.name;
      const output = element("output", "", "");
      output.id = `${id}-value`;
      output.htmlFor = id;
      const name = element("span", "name", id);
      const label = element("label", local ? "slider" : "slider server");
      label.title = `${setting.name}: ${setting.help}` + (local ? "" : " — computed by the server");
      label.dataset.setting = setting.name;
      if (!local) name.append(element("span", "where", "server"));
      label.append(name, input, output);
      box.append(label);
      input.addEventListener("input", slidersMoved);
      page.controls.push({ setting, stage, input, output });
    }
  }
  showSliderValues();
}

// The numbers that turn a setting's stage off. A slider cannot be "unset": a stage whose first setting is off
// only when unset (null) is off at the slider's low end.
function offValues(setting, index) {
  const numbers = setting.off.filter((value) => typeof value === "number");
  return numbers.length || index > 0 || !setting.slider ? numbers : [setting.slider[0]];
}

// What a control starts at: the setting's default, else the first number that means "off".
function initialValue(setting) {
  const value = [setting.default, ...setting.offValues].find((v) => typeof v === "number");
  return value === undefined ? setting.slider[0] : value;
}

function controlValue(control) {
  const value = Number(control.input.value);
  return control.setting.kind === "int" ? Math.round(value) : value;
}

function isOff(setting, value) {
  return setting.offValues.includes(value);
}

// The controls' values by setting name, and the greedy checkbox.
function settings() {
  const values = {};
  for (const control of page.controls) values[control.setting.name] = controlValue(control);
  return { values, greedy: $("greedy").checked };
}

function isGreedy(s) {
  return s.greedy || s.values[GREEDY_SETTING] === 0;
}

// The GenerationConfig fields for the server: the settings of every stage that is on (its first setting is
// not at a value meaning "off"); a stage that is off sends nothing.
function samplerConfig() {
  const { values } = settings();
  return Object.assign({}, ...chainPlan(values, false).stages.map((stage) => stage.values));
}

// What every request sends as `config`: the sliders' settings and the applied constraint.
function pageConfig() {
  return page.constraint ? { ...samplerConfig(), constraint: page.constraint } : samplerConfig();
}

// The stages that are on, in order, with their settings; greedy leaves out the warpers (as the server does).
// `local`: chain.js runs them all, so the page can reshape the bars itself.
function chainPlan(values, greedy) {
  const stages = [];
  for (const stage of page.stages) {
    if (greedy && stage.warper) continue;
    const first = stage.settings[0];
    if (!(first.name in values) || isOff(first, values[first.name])) continue;
    const own = {};
    for (const setting of stage.settings) if (setting.name in values) own[setting.name] = values[setting.name];
    stages.push({ name: stage.name, values: own, local: runsLocally(stage) });
  }
  return { greedy, stages, local: stages.every((stage) => stage.local) };
}

// ---------- the constraint box ----------

// The kind selector lists what /api/info says the server takes.
function buildConstraintBox(info) {
  const select = $("constraint-kind");
  select.replaceChildren(element("option", "", "none"));
  select.options[0].value = "";
  for (const kind of info.constraint_kinds || []) {
    const option = element("option", "", CONSTRAINT_KINDS[kind] ? CONSTRAINT_KINDS[kind].label : kind);
    option.value = kind;
    select.append(option);
  }
  showConstraintBox();
}

// The box as a config.constraint ({kind, source}), or null for "none". The server checks it and says what
// is wrong; the page only reads a choice's lines into a list.
function boxConstraint() {
  const kind = $("constraint-kind").value;
  if (!kind) return null;
  const known = CONSTRAINT_KINDS[kind] || {};
  if (known.noSource) return { kind };
  const text = $("constraint-source").value;
  return { kind, source: known.source ? known.source(text) : text };
}

function showConstraintBox() {
  const kind = $("constraint-kind").value;
  const known = CONSTRAINT_KINDS[kind] || {};
  const source = $("constraint-source");
  source.hidden = !kind || Boolean(known.noSource);
  source.placeholder = known.example ? `e.g. ${known.example}` : "";
  $("constraint-hint").textContent = kind ? known.hint || "" : "No constraint: every token may follow.";
  const edited = JSON.stringify(boxConstraint()) !== JSON.stringify(page.constraint);
  const status = $("constraint-status");
  status.textContent = edited ? "edited: Apply to use it" : page.constraint ? "applied" : "";
  status.classList.toggle("edited", edited);
}

// Apply the box: the bars show its mask now (the server's answer), and the next step takes it on.
function applyConstraint() {
  showError(""); // the last constraint's error, if any: the server judges this one
  page.constraint = boxConstraint();
  showConstraintBox();
  renderBars();
  if (!page.state) $("constraint-status").textContent = page.constraint ? "applies when you start" : "";
}

// The plan with the constraint first: a stage the page never runs itself.
function withConstraint(plan) {
  if (!page.constraint) return plan;
  const stage = { name: "constraint", values: {}, local: false, kind: page.constraint.kind };
  return { ...plan, stages: [stage, ...plan.stages], local: false };
}

function decimals(step) {
  for (let places = 0; places < 10; places++) {
    const scaled = step * 10 ** places;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-9) return places;
  }
  return 10;
}

function formatValue(control) {
  const { setting } = control;
  const value = controlValue(control);
  if (isOff(setting, value)) return setting.name === GREEDY_SETTING && value === 0 ? "0 (greedy)" : "off";
  return setting.kind === "int" ? String(value) : value.toFixed(decimals(setting.slider[2]));
}

function showSliderValues() {
  for (const control of page.controls) control.output.textContent = formatValue(control);
}

function slidersMoved() {
  showSliderValues();
  renderBars(); // local stages: no request; others: one request once the sliders rest
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
      classes = `generated${token.forced ? " forced" : ""}${token.overruled_by ? " overruled" : ""}`;
      title = `step ${token.step + 1}: ${percent(token.prob)} after the chain, ${percent(token.raw_prob)} raw, ` +
        `rank ${token.rank}${token.forced ? " (appended by hand)" : ""}`;
      if (token.overruled_by) title += ` · ${overruledText(token)}`;
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
    row.className = [step.forced ? "forced" : "", step.overruled_by ? "overruled" : ""].join(" ").trim();
    const cell = (content, className) => {
      const td = element("td", className);
      td.append(content);
      row.append(td);
    };
    cell(String(step.step + 1), "num");
    const chosen = element("span", "chosen");
    chosen.append(chip(step.piece, step.id, step.forced ? "generated forced" : "generated"));
    if (step.overruled_by) {
      const tag = element("span", "overruled-tag", `⊘ ${stageName(step.overruled_by)}`);
      tag.title = overruledText(step);
      chosen.append(tag);
    }
    cell(chosen);
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
  page.version += 1;
  renderBars();
  // Other panels (views.js) redraw from page.state when it changes.
  document.dispatchEvent(new CustomEvent("decodelab:state", { detail: { state, secret: page.secret } }));
}

// Why a step is marked: the stage that removed the model's own top choice (a grammar forbidding it, ...).
function overruledText(step) {
  const top = step.raw_top && step.raw_top[0];
  const what = top ? `the model's own top choice “${top.piece}” (${percent(top.prob)})` : "the model's own top choice";
  return `${what} was removed by the ${stageName(step.overruled_by)} stage`;
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

// The chain's distribution for the bars: run here when every stage that is on runs locally, else the
// server's answer for this state and these settings ({pending} while it is asked for, {error} if refused).
function currentChain() {
  const s = settings();
  const plan = withConstraint(chainPlan(s.values, isGreedy(s)));
  if (plan.local) {
    page.server = cancelServer(page.server);
    const chain = runChain(page.dist, plan);
    const keptMass = page.dist.order.slice(0, chain.kept).reduce((sum, id) => sum + page.dist.raw.prob(id), 0);
    return { ...chain, keptMass, source: "page" };
  }
  const key = JSON.stringify([page.version, pageConfig(), plan.greedy]);
  const server = page.server;
  if (server && server.key === key) {
    if (server.reply) return serverChain(server, plan);
    if (server.error) return { error: server.error, plan };
    return { pending: true, plan };
  }
  page.server = cancelServer(server);
  askServer(key, plan);
  return { pending: true, plan };
}

function cancelServer(server) {
  if (server && server.timer) clearTimeout(server.timer);
  return null;
}

// Ask for the session's distribution after the chain once the sliders rest; show it if nothing moved since.
function askServer(key, plan) {
  const ids = Array.from(page.dist.order.slice(0, Math.min(BARS, page.dist.order.length)));
  const body = { config: pageConfig(), greedy: plan.greedy, ids };
  const server = { key, ids };
  server.timer = setTimeout(async () => {
    server.timer = null;
    try {
      server.reply = await api(`/api/sessions/${page.state.id}/distribution`, body);
    } catch (error) {
      server.error = error.message;
      if (page.server === server) showError(error.message);
    }
    if (page.server === server) renderBars();
  }, SERVER_DELAY_MS);
  page.server = server;
}

// The server's reply as a chain result; it answers for the ids shown (`probs`, and `allowed` under a
// constraint). Per stage it names only the stage, but for the constraint: its tokens kept and mass removed.
function serverChain({ reply, ids }, plan) {
  const probs = new Map(reply.after.map((c) => [c.id, c.prob])); // the most likely after the chain ...
  reply.probs.forEach((p, index) => probs.set(ids[index], p)); // ... and every token shown
  const allowed = reply.allowed ? new Map(reply.allowed.map((a, index) => [ids[index], a])) : null;
  const stages = plan.stages.map((stage) => stage.name === "constraint" && reply.constraint
    ? { name: stage.name, kind: stage.kind, kept: reply.constraint.kept, removedMass: reply.constraint.removed_mass }
    : { name: stage.name });
  if (page.dist.partial) { // a remote model: the server's chain keeps the reported tokens, after a constraint
    stages.splice(page.constraint ? 1 : 0, 0, { name: "reported" });
  }
  if (reply.greedy) stages.push({ name: "greedy" });
  return {
    kept: reply.kept, greedy: reply.greedy, stages, keptMass: reply.kept_raw_mass, source: "server",
    prob: (id) => probs.get(id) ?? 0,
    forbidden: (id) => Boolean(allowed) && allowed.get(id) === false,
    after: reply.after, // [{id, piece, prob, raw_prob}], most likely first
  };
}

// A share of the mass a stage removed: a grammar often removes nearly all of it, which "100.0%" would hide.
function removedShare(p) {
  return p > 0.999 ? `all but ${percent(Math.max(0, 1 - p))}` : percent(p);
}

function stageName(name) {
  return name.replaceAll("_", "-");
}

function renderBars() {
  const list = $("bars");
  const summary = $("dist-summary");
  list.replaceChildren();
  if (!page.dist) {
    list.dataset.source = "none";
    summary.textContent = page.state
      ? "The context is full: undo some tokens or start over."
      : "Start a prompt to see the next-token distribution.";
    return;
  }
  const dist = page.dist;
  const chain = currentChain();
  const known = !chain.pending && !chain.error;
  list.dataset.source = known ? chain.source : chain.pending ? "pending" : "error";
  const count = (n) => n.toLocaleString("en");
  const partial = dist.partial;
  const entropy = entropyText(dist) + " · " + (partial
    ? `the top ${count(partial.reported)} hold ${percent(partial.knownMass)} of the mass; the rest is not known · ` : "");
  if (!known) {
    const names = chain.plan.stages.filter((stage) => !stage.local).map((stage) => stageName(stage.name));
    summary.textContent = entropy + (chain.pending
      ? `asking the server for the distribution after the chain (${names.join(", ")} run there)…`
      : `the server could not compute the distribution after the chain: ${chain.error}`);
  } else {
    // a remote model's `reported` stage: the line says it already
    const stages = chain.stages.filter((stage) => stage.name !== "reported").map((stage) => stage.kept === undefined
      ? stageName(stage.name)
      : `${stageName(stage.name)}${stage.kind ? ` (${stageName(stage.kind)})` : ""} → ${count(stage.kept)}` +
        (stage.removedMass === undefined ? "" : ` (removes ${removedShare(stage.removedMass)} of the raw mass)`));
    summary.textContent = entropy + (stages.length ? `${stages.join(" · ")} · ` : "no sampler stage · ") +
      `${count(chain.kept)} of ${count(partial ? partial.reported : dist.logits.length)}` +
      `${partial ? " reported" : ""} tokens possible, ${percent(chain.keptMass)} of the raw mass` +
      (chain.source === "server" ? " · computed by the server" : "");
  }

  // A remote model's tokens beyond those its server reported are not real candidates: the rest bar holds them.
  const shown = Math.min(BARS, dist.partial ? dist.partial.reported : dist.logits.length);
  const ids = Array.from(dist.order.slice(0, shown));
  // A stage that reorders (a grammar, a penalty) may keep tokens far down the model's ranking: the most
  // likely of them follow, in the model's order, so what a step draws from is on screen.
  const kept = known && chain.after ? chain.after.filter((c) => dist.position[c.id] >= shown).slice(0, KEPT_BARS) : [];
  const pieces = new Map([...dist.pieces, ...kept.map((c) => [c.id, c.piece])]);
  kept.sort((a, b) => dist.position[a.id] - dist.position[b.id]);
  ids.push(...kept.map((c) => c.id));
  const post = (id) => (known ? chain.prob(id) : null);
  const rest = dist.partial ? Math.max(0, 1 - dist.partial.knownMass) : 0;
  const largest = Math.max(rest, ...ids.map((id) => Math.max(dist.raw.prob(id), post(id) || 0)));
  ids.forEach((id, j) => {
    if (j === shown && kept.length) {
      list.append(element("li", "bars-gap", "⋯ kept by the chain, further down the model's ranking"));
    }
    const raw = dist.raw.prob(id);
    const after = post(id);
    const forbidden = known && Boolean(chain.forbidden) && chain.forbidden(id);
    const removed = after === 0 || forbidden;
    const item = document.createElement("li");
    const row = element("button", `bar-row${removed ? " removed" : ""}${forbidden ? " forbidden" : ""}` +
      (known ? "" : " pending"));
    row.type = "button";
    row.dataset.id = id;
    row.dataset.rank = dist.position[id] + 1;
    row.dataset.raw = raw;
    if (known) row.dataset.post = after;
    row.title = `append token ${id}` +
      (forbidden ? ` (the ${stageName(page.constraint.kind)} constraint forbids it here)` : "");
    const label = element("span", "label");
    const piece = pieces.has(id) ? pieces.get(id) : `#${id}`;
    label.append(element("span", "rank", String(dist.position[id] + 1)), chip(piece, id));
    const bars = element("span", "bars-cell");
    const rawBar = element("span", "bar raw");
    rawBar.style.width = `${(100 * raw) / largest}%`;
    const postBar = element("span", "bar post");
    postBar.style.width = `${(100 * (after || 0)) / largest}%`;
    bars.append(rawBar, postBar);
    const numbers = element("span", "numbers");
    const postText = !known ? "…" : forbidden ? "forbidden" : removed ? (chain.greedy ? "—" : "removed") : percent(after);
    numbers.append(element("span", "raw-value", percent(raw)), element("span", "post-value", postText));
    row.append(label, bars, numbers);
    row.addEventListener("click", () => action(() => appendToken(id)));
    item.append(row);
    list.append(item);
  });
  if (dist.partial) list.append(restBar(dist.partial, rest, largest));
  updateButtons();
}

// "entropy 1.23 nats", or for a remote model, the bounds of what it can be.
function entropyText(dist) {
  if (!dist.partial) return `entropy ${dist.entropy.toFixed(2)} nats`;
  const [lowest, highest] = dist.partial.entropyBounds;
  return `entropy between ${lowest.toFixed(2)} and ${highest.toFixed(2)} nats ` +
    `(the server told its top ${dist.partial.reported})`;
}

// The last bar of a remote model: the mass its server did not tell, token by token. Not a token: not clickable,
// and no step draws from it.
function restBar(partial, rest, largest) {
  const item = document.createElement("li");
  const row = element("div", "bar-row rest");
  row.dataset.raw = rest;
  row.title = `the top ${partial.reported} hold ${percent(partial.knownMass)} of the mass; the rest is not known ` +
    "(the server did not say which tokens hold it, so no step can choose one)";
  const label = element("span", "label");
  label.append(element("span", "rank", ""), element("span", "rest-name", "rest (not known)"));
  const bars = element("span", "bars-cell");
  const bar = element("span", "bar rest");
  bar.style.width = `${(100 * rest) / largest}%`;
  bars.append(bar);
  const numbers = element("span", "numbers");
  numbers.append(element("span", "raw-value", percent(rest)), element("span", "post-value", "—"));
  row.append(label, bars, numbers);
  item.append(row);
  return item;
}

function updateButtons() {
  const busy = document.body.dataset.busy === "1";
  const live = Boolean(page.state);
  const canStep = live && Boolean(page.state.next);
  $("start").disabled = busy;
  $("greedy-step").disabled = busy || !canStep;
  const greedy = isGreedy(settings());
  $("sample-step").disabled = busy || !canStep || greedy;
  $("sample-step").title = greedy ? "greedy is on (checkbox or temperature 0): every step takes the argmax" : "";
  $("generate").disabled = busy || !canStep;
  $("undo").disabled = busy || !live || page.state.steps.length === 0;
  for (const row of document.querySelectorAll(".bar-row")) row.disabled = busy;
}

// ---------- actions ----------

async function start() {
  const prompt = $("prompt").value;
  page.constraint = boxConstraint(); // Start takes the box as it is
  showConstraintBox();
  const body = { prompt, chat: $("chat").checked, config: pageConfig() };
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
  return { greedy: greedy || isGreedy(settings()), config: pageConfig() };
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
  // under the page's settings, as a step: the record's chain probability is the bar's, and a token the
  // applied constraint forbids is refused
  const { state } = await api(`/api/sessions/${page.state.id}/append`, { token_id: id, ...stepBody(false) });
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
  if (!page.controls.length) {
    buildControls(info); // before the model line, which tests wait for
    buildConstraintBox(info);
  }
  renderBars();
  $("model-info").textContent = `${info.model} · context ${info.context_length.toLocaleString("en")} tokens · ` +
    `vocabulary ${info.vocab_size.toLocaleString("en")}` + (info.chat_template ? " · chat template" : "") +
    (info.mode.remote ? ` · remote model (${info.mode.remote}): its server tells each position's top tokens only`
      : info.mode.exact ? "" : ` · fast mode: ${info.mode.label} (not the exact path)`);
  $("chat").disabled = !info.chat_template;
}

function setUp() {
  $("greedy").addEventListener("input", slidersMoved);
  $("constraint-kind").addEventListener("change", showConstraintBox);
  $("constraint-source").addEventListener("input", showConstraintBox);
  $("constraint-box").addEventListener("submit", (event) => {
    event.preventDefault();
    applyConstraint();
  });
  $("constraint-source").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      applyConstraint();
    }
  });
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
window.decodelab = { runChain, chainPlan, runsLocally, settings, samplerConfig, pageConfig, page };

setUp();
