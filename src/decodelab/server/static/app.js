// decodelab web explorer: one session on the server, the sampler chain re-run here as the sliders move.
// This file holds the actions (start, step, append, undo; Generate N is generate-stream.js, the history
// history.js), the busy state they share, and the wiring of the page's controls and keys.
//
// One action runs at a time (`page.busy`): while it runs, every button and key that would start another is
// off, except Stop and Start during Generate N (Start stops it first). Each action remembers the session it
// began on and drops the answer if that session is no longer the page's (state.js isCurrent).
"use strict";

// Run one user action: the buttons off while it runs, its error (if any) on the error line. Refused while
// another runs.
function action(run, kind = "action") {
  if (page.busy) return page.running;
  page.busy = kind;
  updateButtons();
  page.running = (async () => {
    try {
      showError("");
      await run();
    } catch (error) {
      if (error.name === "AbortError") return;
      showError(error.message);
      if (!(error instanceof ApiError)) console.error(error);
    } finally {
      page.busy = null;
      page.running = null;
      updateButtons();
    }
  })();
  return page.running;
}

function updateButtons() {
  const busy = page.busy !== null;
  const generating = page.busy === "generate";
  document.body.dataset.busy = busy ? "1" : "0";
  const live = Boolean(page.state);
  const canStep = live && Boolean(page.state.next);
  $("start").disabled = busy && !generating; // Start during Generate N stops it first
  $("load-trace-button").disabled = busy && !generating;
  $("greedy-step").disabled = busy || !canStep;
  const greedy = isGreedy(settings());
  $("sample-step").disabled = busy || !canStep || greedy;
  $("sample-step").title = greedy ? "greedy is on (checkbox or temperature 0): every step takes the argmax" : "";
  $("generate").disabled = busy || !canStep;
  $("undo").disabled = busy || !live || page.state.steps.length === 0;
  $("redo").disabled = busy || !redoBranch();
  $("download-json").disabled = busy || !live;
  $("download-csv").disabled = busy || !live;
  $("stop").hidden = !generating;
  for (const button of document.querySelectorAll(".bar-row, #steps button, #branches button")) button.disabled = busy;
  if (!generating) $("bars").classList.remove("stale");
}

// ---------- actions ----------

function stepBody(greedy) {
  return { greedy: greedy || isGreedy(settings()), config: pageConfig() };
}

// The prompt box's prompt; a new session. Start (and Ctrl+Enter) during Generate N stops that first.
async function startFromForm() {
  if (page.busy === "generate") {
    page.epoch += 1; // the running generation's answers are now for an old session
    page.generation.controller.abort(); // closing the stream cancels it on the server
    await page.running;
  }
  if (page.busy) return;
  await action(() => {
    page.constraint = boxConstraint(); // Start takes the box as it is
    showConstraintBox();
    const body = { prompt: $("prompt").value, chat: $("chat").checked };
    if (body.chat && $("system").value.trim()) body.system = $("system").value;
    return startSession(body);
  });
}

// A new session from `body` (a prompt, or a saved trace to replay); the page's old one is given back.
async function startSession(body) {
  const seed = body.trace ? null : seedValue();
  const request = body.trace ? body : { ...body, config: { ...pageConfig(), ...(seed === null ? {} : { seed }) } };
  const old = page.state ? { id: page.state.id, secret: page.secret } : null;
  page.epoch += 1; // from here on, answers for the old session are dropped
  const epoch = page.epoch;
  let state;
  try {
    state = await api("/api/sessions", request);
  } catch (error) {
    if (error.status !== 429 || !old) throw error;
    // The server holds as many sessions as it may: give back this page's own, then try once more.
    await api(`/api/sessions/${old.id}`, undefined, "DELETE", old.secret).catch(() => {});
    old.id = null;
    state = await api("/api/sessions", request);
  }
  if (old && old.id) api(`/api/sessions/${old.id}`, undefined, "DELETE", old.secret).catch(() => {});
  if (epoch !== page.epoch) return;
  page.secret = state.secret;
  page.branches = [];
  page.lastGenerate = null;
  showState(state);
}

function showState(state) {
  page.state = state;
  renderState();
}

async function step(greedy) {
  const session = currentSession();
  const { state } = await api(`/api/sessions/${session.id}/step`, stepBody(greedy));
  if (!isCurrent(session)) return;
  page.lastGenerate = null;
  showState(state);
}

async function appendToken(id) {
  // under the page's settings, as a step: the record's chain probability is the bar's, and a token the
  // applied constraint forbids is refused
  const session = currentSession();
  const { state } = await api(`/api/sessions/${session.id}/append`, { token_id: id, ...stepBody(false) });
  if (!isCurrent(session)) return;
  page.lastGenerate = null;
  showState(state);
}

async function undo() {
  await backTo(page.state.steps.length - 1);
}

// ---------- rendering the state ----------

function renderCounts(state) {
  $("counts").textContent = `— ${state.prompt.ids.length} prompt tokens + ${state.steps.length} generated` +
    (state.seed !== undefined && state.seed !== null ? ` · seed ${wholeNumber(state.seed)}` : "");
}

function renderState() {
  const state = page.state;
  const tokens = sessionTokens(state);
  page.pending = pendingBytes(joinBytes(tokens.map((token) => token.bytes)));
  renderText(state, tokens);
  renderTokens(state, tokens);
  renderCounts(state);
  renderSteps(state);
  renderStopLine();
  page.dist = state.next ? prepareDistribution(state.next) : null;
  page.version += 1;
  renderBars();
  updateButtons();
  // Other panels (views.js) redraw from page.state when it changes.
  document.dispatchEvent(new CustomEvent("decodelab:state", { detail: { state, secret: page.secret } }));
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
  } else if (done && done.stopped) {
    text = `Generated ${done.got} of ${done.asked}: you stopped it.`;
  } else if (done) {
    text = `Generated ${done.got} of ${done.asked}; no stop reason yet.`;
  }
  line.textContent = text;
  line.classList.toggle("stopped", Boolean(state.stop_reason));
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
  page.maxGenerate = (info.limits && info.limits.max_generate_steps) || page.maxGenerate;
  $("generate-count").max = page.maxGenerate;
  renderBars();
  $("model-info").textContent = `${info.model} · context ${info.context_length.toLocaleString("en")} tokens · ` +
    `vocabulary ${info.vocab_size.toLocaleString("en")}` + (info.chat_template ? " · chat template" : "") +
    (info.mode.remote ? ` · remote model (${info.mode.remote}): its server tells each position's top tokens only`
      : info.mode.exact ? "" : ` · fast mode: ${info.mode.label} (not the exact path)`);
  $("chat").disabled = !info.chat_template;
}

// ---------- wiring ----------

// The keys listed on the page (#shortcuts); none while typing in a field.
const SHORTCUTS = {
  g: () => $("greedy-step").disabled || action(() => step(true)),
  s: () => $("sample-step").disabled || action(() => step(false)),
  n: () => $("generate").disabled || action(generate),
  u: () => $("undo").disabled || action(undo),
  r: () => $("redo").disabled || action(() => redo()),
  Escape: () => stopGeneration(),
};

function onKey(event) {
  const typing = event.target.closest && event.target.closest("input, textarea, select");
  if (event.key === "Escape" && page.busy === "generate") {
    event.preventDefault();
    stopGeneration();
    return;
  }
  if (typing || event.ctrlKey || event.metaKey || event.altKey || !SHORTCUTS[event.key]) return;
  event.preventDefault();
  SHORTCUTS[event.key]();
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
      if (!page.busy) applyConstraint();
    }
  });
  $("chat").addEventListener("change", () => {
    $("system").hidden = !$("chat").checked;
  });
  $("prompt-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startFromForm();
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      if (!$("start").disabled) startFromForm();
    }
  });
  $("greedy-step").addEventListener("click", () => action(() => step(true)));
  $("sample-step").addEventListener("click", () => action(() => step(false)));
  $("generate").addEventListener("click", () => action(generate));
  $("stop").addEventListener("click", stopGeneration);
  $("undo").addEventListener("click", () => action(undo));
  $("redo").addEventListener("click", () => action(() => redo()));
  $("download-json").addEventListener("click", () => action(downloadJson));
  $("download-csv").addEventListener("click", () => action(async () => downloadCsv()));
  $("load-trace-button").addEventListener("click", () => $("load-trace").click());
  $("load-trace").addEventListener("change", async () => {
    const file = $("load-trace").files[0];
    $("load-trace").value = "";
    if (!file) return;
    if (page.busy === "generate") {
      page.epoch += 1;
      page.generation.controller.abort();
      await page.running;
    }
    action(() => loadTrace(file));
  });
  for (const box of document.querySelectorAll("[data-explain]")) {
    const { button, note } = explainer(box.dataset.explain);
    box.append(button);
    box.after(note);
  }
  document.addEventListener("keydown", onKey);
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
window.decodelab = { runChain, chainPlan, runsLocally, settings, samplerConfig, pageConfig, seedValue, page };

setUp();
