// decodelab web explorer: the history of a session as a tree.
//
// The step table says how each token came (greedy, sampled or forced), under which settings and with which
// seed. Any past token can be gone back to (click its chip, or ↶ on its row) and any alternative in the
// table branches there (go back, then append it). What is taken back is kept on the page as a branch
// (its trace entries, from GET /api/sessions/{id}/trace) and comes back exactly through POST .../redo.
// The trace downloads as JSON (the server's) or CSV (made here from the steps), and loads back (replay).
"use strict";

const ALTERNATIVES = 4; // alternatives per step row

function stepIds() {
  return page.state ? page.state.steps.map((step) => step.id) : [];
}

function startsWith(ids, prefix) {
  return prefix.length <= ids.length && prefix.every((id, index) => ids[index] === id);
}

function renderSteps(state) {
  const rows = $("steps").tBodies[0];
  rows.replaceChildren();
  for (const step of state.steps) rows.append(stepRow(step));
  const box = $("steps-box");
  box.scrollTop = box.scrollHeight; // the newest step in view
  renderBranches();
}

function stepRow(step) {
  const row = document.createElement("tr");
  row.className = [step.forced ? "forced" : "", step.overruled_by ? "overruled" : ""].join(" ").trim();
  row.dataset.step = step.step;
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
  cell(howNode(step), "how");
  const prob = element("span", "", percent(step.prob));
  prob.title = exactPercent(step.prob);
  cell(prob, "num");
  const raw = element("span", "", percent(step.raw_prob));
  raw.title = exactPercent(step.raw_prob);
  cell(raw, "num");
  cell(String(step.rank), "num");
  const alternatives = element("span", "alternatives");
  for (const alt of step.raw_top.slice(0, ALTERNATIVES)) {
    const mine = alt.id === step.id;
    const item = element(mine ? "span" : "button", mine ? "alternative chosen" : "alternative");
    item.append(pieceNode(alt.piece), ` ${percent(alt.prob)}`);
    if (!mine) {
      item.type = "button";
      item.dataset.id = alt.id;
      item.title = `branch here: take back step ${step.step + 1} onwards and append token ${alt.id} instead`;
      item.addEventListener("click", () => action(() => branchWith(step.step, alt.id)));
    }
    alternatives.append(item);
  }
  cell(alternatives);
  const back = element("button", "back", "↶");
  back.type = "button";
  back.title = `undo to here: take back step ${step.step + 1} and every later one (Redo brings them back)`;
  back.addEventListener("click", () => action(() => backTo(step.step)));
  cell(back);
  return row;
}

// "sampled · temperature 0.7, top-p 0.9 · seed 12": how the step's token came, from the record.
function howNode(step) {
  const how = step.how || (step.forced ? "forced" : "");
  const node = element("span", "how-cell");
  node.append(element("span", `how-tag ${how}`, how || "?"));
  const settings = Object.entries(step.settings || {}).filter(([name]) => name !== "greedy").map(([name, value]) =>
    name === "constraint" && value ? `constraint (${stageName(value.kind)})`
      : `${stageName(name)} ${typeof value === "object" ? JSON.stringify(value) : value}`);
  if (settings.length) node.append(element("span", "how-settings", settings.join(", ")));
  const seed = step.seed === undefined || step.seed === null ? null : wholeNumber(step.seed);
  if (seed !== null) {
    node.append(element("span", "how-seed", `seed ${seed.length > 10 ? `${seed.slice(0, 4)}…${seed.slice(-4)}` : seed}`));
  }
  node.title = `${how || "step"}` + (settings.length ? ` under ${settings.join(", ")}` : " under the defaults") +
    (seed !== null ? `, drawn with seed ${seed} (draw ${step.draw} of the session's seed)` : "");
  return node;
}

// The session's saved trace (Session.save()): prompt ids, config, seed, and per token {id, draw, config?}.
async function fetchTrace(session) {
  return api(`/api/sessions/${session.id}/trace`, undefined, "GET", session.secret);
}

// The trace entries of the session's tokens; from the step records when the server has no /trace (older
// servers), which redo then re-applies by id and draw.
async function traceTokens(session, steps) {
  try {
    return (await fetchTrace(session)).trace.tokens;
  } catch (error) {
    if (error.status !== 404 && error.status !== 405) throw error;
    return steps.map((step) => (step.draw === undefined ? { id: step.id } : { id: step.id, draw: step.draw }));
  }
}

// Go back to `position` steps: the later ones are kept as a branch (redo brings them back exactly).
async function backTo(position) {
  const session = currentSession();
  const steps = page.state.steps;
  if (position >= steps.length) return;
  const tokens = await traceTokens(session, steps);
  if (!isCurrent(session)) return;
  const { state } = await api(`/api/sessions/${session.id}/undo`, { count: steps.length - position });
  if (!isCurrent(session)) return;
  const ids = steps.map((step) => step.id);
  keepBranch(ids.slice(0, position), tokens.slice(position), steps.slice(position), ids);
  page.lastGenerate = null;
  showState(state);
}

// Keep a continuation taken back from `prefix`; one that went on from where it ended joins it.
function keepBranch(prefix, tokens, steps, before) {
  const next = page.branches.findIndex((b) => b.prefix.length === before.length && startsWith(before, b.prefix));
  if (next >= 0) {
    const [later] = page.branches.splice(next, 1);
    tokens = tokens.concat(later.tokens);
    steps = steps.concat(later.steps);
  }
  const ids = steps.map((step) => step.id).join(",");
  page.branches = page.branches.filter((b) =>
    !(b.prefix.length === prefix.length && startsWith(prefix, b.prefix) && b.steps.map((s) => s.id).join(",") === ids));
  page.branches.unshift({ prefix, tokens, steps });
}

// Branch at step `index`: take it and the later steps back, then append `id` in its place.
async function branchWith(index, id) {
  await backTo(index);
  await appendToken(id);
}

// The branch Redo takes from: the newest that continues exactly where the session is.
function redoBranch() {
  const ids = stepIds();
  return page.branches.find((b) => b.prefix.length === ids.length && startsWith(ids, b.prefix)) || null;
}

// Redo one step (or `all` of a branch): the server re-applies the trace entries exactly.
async function redo(branch = redoBranch(), all = false) {
  if (!branch) return;
  const session = currentSession();
  const taken = all ? branch.tokens.length : 1;
  const { state } = await api(`/api/sessions/${session.id}/redo`, { tokens: branch.tokens.slice(0, taken) });
  if (!isCurrent(session)) return;
  page.branches = page.branches.filter((b) => b !== branch);
  if (taken < branch.tokens.length) {
    const ids = branch.steps.slice(0, taken).map((step) => step.id);
    page.branches.unshift({ prefix: branch.prefix.concat(ids), tokens: branch.tokens.slice(taken),
      steps: branch.steps.slice(taken) });
  }
  page.lastGenerate = null;
  showState(state);
}

// Go back to where a branch left off (keeping what is there now as another branch), then redo all of it.
async function restoreBranch(branch) {
  await backTo(branch.prefix.length);
  await redo(branch, true);
}

// The branches that start on the current path, newest first.
function renderBranches() {
  const list = $("branches");
  list.replaceChildren();
  const ids = stepIds();
  const shown = page.branches.filter((b) => startsWith(ids, b.prefix));
  $("branches-box").hidden = shown.length === 0;
  for (const branch of shown) {
    const item = element("li", "branch");
    const bytes = joinBytes(branch.steps.map(tokenBytes));
    let from = 0; // a branch may start inside a character: its first bytes then are "…"
    while (from < bytes.length && isContinuation(bytes[from])) from++;
    const text = (from ? "…" : "") + new TextDecoder().decode(bytes.subarray(from));
    const what = element("span", "branch-text", text.length > 60 ? `${text.slice(0, 60)}…` : text);
    const where = element("span", "muted", ` after step ${branch.prefix.length} · ${branch.steps.length} tokens `);
    const button = element("button", "restore", "restore");
    button.type = "button";
    button.title = "go back to where this branch left off and redo all of it (what is there now is kept too)";
    button.addEventListener("click", () => action(() => restoreBranch(branch)));
    item.append(what, where, button);
    list.append(item);
  }
}

// ---------- the trace: download and load back ----------

function download(name, text, type) {
  const link = element("a");
  link.href = URL.createObjectURL(new Blob([text], { type }));
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

async function downloadJson() {
  const session = currentSession();
  const text = await apiText(`/api/sessions/${session.id}/trace`, session.secret); // as sent: a seed is 62 bits
  if (!isCurrent(session)) return;
  download(`decodelab-trace-${session.id}.json`, text, "application/json");
}

const CSV_COLUMNS = ["step", "id", "piece", "how", "prob", "raw_prob", "rank", "entropy", "seed", "settings"];

function csvCell(value) {
  const text = value === null || value === undefined ? "" : typeof value === "object" ? JSON.stringify(value) : String(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

function downloadCsv() {
  const lines = [CSV_COLUMNS.join(",")];
  for (const step of page.state.steps) {
    const row = { ...step, step: step.step + 1, how: step.how || (step.forced ? "forced" : "") };
    lines.push(CSV_COLUMNS.map((column) => csvCell(row[column])).join(","));
  }
  download(`decodelab-steps-${page.state.id}.csv`, lines.join("\r\n") + "\r\n", "text/csv");
}

// A trace file chosen: a new session replays it exactly (POST /api/sessions with the trace).
async function loadTrace(file) {
  let saved;
  try {
    saved = parseJson(await file.text());
  } catch (error) {
    throw new ApiError(`${file.name} is not a decodelab trace (not JSON: ${error.message})`, 0);
  }
  const trace = saved && saved.trace ? saved.trace : saved;
  if (!trace || !Array.isArray(trace.prompt_ids) || !Array.isArray(trace.tokens)) {
    throw new ApiError(`${file.name} is not a decodelab trace: it needs prompt_ids and tokens`, 0);
  }
  await startSession(saved.model ? { trace, model: saved.model } : { trace });
}
