// decodelab web explorer: the next-token bars, the chain drawn as a pipeline, and the summary line.
//
// The server sends the raw logits of the whole vocabulary with every state (base64 float32); when every stage
// that is on is one chain.js runs, the page applies them itself, so the bars change without a round trip.
// Otherwise it asks the server for the distribution after the chain (POST /api/sessions/{id}/distribution)
// and says so. A step sends the same settings, so the server draws from what is shown.
//
// Nothing is hidden: a last bar holds the rest of the vocabulary (raw and after the chain), the summary gives
// the entropy before and after the chain, top-p and min-p draw where they cut, and a byte token says which
// character it completes after the unfinished one the text ends with (utf8.js).
//
// A constraint is a stage that always runs on the server, first in the chain; the tokens its grammar forbids
// are struck through as "forbidden". On a remote model the server behind told only its top tokens: the bars
// are those, then one "rest (not known)" bar, which no step can draw; the entropy is shown as its bounds.
"use strict";

const BARS = 20; // candidates shown, in the model's own (raw) order
const KEPT_BARS = 10; // at most this many more: tokens the server's chain keeps beyond the first BARS (a grammar's)
const SERVER_DELAY_MS = 120; // wait for the sliders to rest before asking the server

// The chain's distribution for the bars: run here when every stage that is on runs locally, else the
// server's answer for this state and these settings ({pending} while it is asked for, {error} if refused).
function currentChain() {
  const s = settings();
  const plan = withConstraint(chainPlan(s.values, isGreedy(s)));
  if (plan.local) {
    page.server = cancelServer(page.server);
    const chain = runChain(page.dist, plan);
    const keptMass = page.dist.order.slice(0, chain.kept).reduce((sum, id) => sum + page.dist.raw.prob(id), 0);
    return { ...chain, keptMass, plan, source: "page" };
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
  const session = currentSession();
  server.timer = setTimeout(async () => {
    server.timer = null;
    try {
      server.reply = await api(`/api/sessions/${session.id}/distribution`, body, undefined, session.secret);
    } catch (error) {
      server.error = error.message;
      if (page.server === server) showError(error.message);
    }
    if (page.server === server && isCurrent(session)) renderBars();
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
  if (reply.greedy) stages.push({ name: "greedy", kept: 1 });
  return {
    kept: reply.kept, greedy: reply.greedy, stages, keptMass: reply.kept_raw_mass, plan, source: "server",
    entropy: reply.greedy ? 0 : reply.entropy,
    prob: (id) => probs.get(id) ?? 0,
    forbidden: (id) => Boolean(allowed) && allowed.get(id) === false,
    after: reply.after, // [{id, piece, prob, raw_prob}], most likely first
  };
}

function renderBars() {
  const list = $("bars");
  list.replaceChildren();
  if (!page.dist) {
    list.dataset.source = "none";
    $("pipeline").replaceChildren();
    $("dist-summary").textContent = page.state
      ? "The context is full: undo some tokens or start over."
      : "Start a prompt to see the next-token distribution.";
    return;
  }
  const dist = page.dist;
  const chain = currentChain();
  const known = !chain.pending && !chain.error;
  list.dataset.source = known ? chain.source : chain.pending ? "pending" : "error";
  renderSummary(dist, chain, known);
  renderPipeline(dist, chain, known);

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
  const rest = restMass(dist, ids, known ? post : null);
  const largest = Math.max(rest.raw, rest.post || 0, ...ids.map((id) => Math.max(dist.raw.prob(id), post(id) || 0)));
  const cuts = known && chain.source === "page" ? cutMarks(chain) : [];
  const cumulative = cuts.find((cut) => cut.cumulative);
  $("cum-legend").hidden = !cumulative;
  ids.forEach((id, j) => {
    if (j === shown && kept.length) {
      list.append(element("li", "bars-gap", "⋯ kept by the chain, further down the model's ranking"));
    }
    for (const cut of cuts) if (cut.at === j && j < shown) list.append(cutLine(cut));
    const row = barRow(id, pieces, chain, known, largest, cumulative && j < shown ? cumulative : null, j);
    const item = document.createElement("li");
    item.append(row);
    list.append(item);
  });
  list.append(restBar(dist, rest, largest, ids.length));
  updateButtons();
}

function barRow(id, pieces, chain, known, largest, cumulative, j) {
  const dist = page.dist;
  const raw = dist.raw.prob(id);
  const after = known ? chain.prob(id) : null;
  const forbidden = known && Boolean(chain.forbidden) && chain.forbidden(id);
  const removed = after === 0 || forbidden;
  const row = element("button", `bar-row${removed ? " removed" : ""}${forbidden ? " forbidden" : ""}` +
    (known ? "" : " pending"));
  row.type = "button";
  row.dataset.id = id;
  row.dataset.rank = dist.position[id] + 1;
  row.dataset.raw = raw;
  if (known) row.dataset.post = after;
  row.title = `append token ${id}: ${exactPercent(raw)} raw` + (known ? `, ${exactPercent(after)} after the chain` : "") +
    (forbidden ? ` (the ${stageName(page.constraint.kind)} constraint forbids it here)` : "");
  const label = element("span", "label");
  const piece = pieces.has(id) ? pieces.get(id) : `#${id}`;
  label.append(element("span", "rank", String(dist.position[id] + 1)), chip(piece, id));
  const completes = completionText(dist.bytes.get(id) || pieceBytes(piece), piece);
  if (completes) label.append(element("span", "completes", completes));
  const bars = element("span", "bars-cell");
  const rawBar = element("span", "bar raw");
  rawBar.style.width = `${(100 * raw) / largest}%`;
  bars.append(rawBar);
  if (after > 0) { // a removed token has no post bar at all (not a sliver)
    const postBar = element("span", "bar post");
    postBar.style.width = `${(100 * after) / largest}%`;
    bars.append(postBar);
  } else bars.append(element("span", "bar none"));
  if (cumulative && j < cumulative.cumulative.length) {
    const line = element("span", "cum");
    line.style.width = `${100 * cumulative.cumulative[j]}%`;
    line.title = `top-p: the tokens down to this one hold ${exactPercent(cumulative.cumulative[j])} of the mass`;
    const mark = element("span", "cum-mark");
    mark.style.left = `${100 * cumulative.threshold}%`;
    bars.append(line, mark);
  }
  const numbers = element("span", "numbers");
  const postText = !known ? "…" : forbidden ? "forbidden" : removed ? (chain.greedy ? "—" : "removed") : percent(after);
  numbers.append(element("span", "raw-value", percent(raw)), element("span", "post-value", postText));
  row.append(label, bars, numbers);
  row.addEventListener("click", () => action(() => appendToken(id)));
  return row;
}

// What a candidate writes after the unfinished character the text ends with: "completes 지".
function completionText(bytes, piece) {
  const partialPiece = /<0x[0-9A-Fa-f]{2}>/.test(piece);
  if (!page.pending.length && !partialPiece) return "";
  const result = spelled(page.pending, bytes);
  const text = result.text.trim() || result.text;
  if (page.pending.length && text) return result.pending ? `completes ${text}, starts another` : `completes ${text}`;
  if (result.pending) return page.pending.length ? "more of a character" : "starts a character";
  return "";
}

// The mass outside the bars shown: raw, and after the chain when known. On a remote model, what its server
// did not tell (the chain keeps none of it).
function restMass(dist, ids, post) {
  if (dist.partial) return { raw: Math.max(0, 1 - dist.partial.knownMass), post: post ? 0 : null, unknown: true };
  const raw = Math.max(0, 1 - ids.reduce((sum, id) => sum + dist.raw.prob(id), 0));
  return { raw, post: post ? Math.max(0, 1 - ids.reduce((sum, id) => sum + post(id), 0)) : null };
}

// The last bar: the rest of the vocabulary. Not a token: not clickable, and a step draws from it only as
// one of the tokens it holds.
function restBar(dist, rest, largest, shownCount) {
  const item = document.createElement("li");
  const row = element("div", "bar-row rest");
  row.dataset.raw = rest.raw;
  if (rest.post !== null) row.dataset.post = rest.post;
  const others = dist.logits.length - shownCount;
  const name = rest.unknown ? "rest (not known)" : `rest of the vocabulary (${count(others)} tokens)`;
  row.title = rest.unknown
    ? `the top ${dist.partial.reported} hold ${percent(dist.partial.knownMass)} of the mass; the rest is not known ` +
      "(the server did not say which tokens hold it, so no step can choose one)"
    : `the ${count(others)} tokens not shown hold ${exactPercent(rest.raw)} of the model's mass` +
      (rest.post === null ? "" : ` and ${exactPercent(rest.post)} after the chain`);
  const label = element("span", "label");
  label.append(element("span", "rank", ""), element("span", "rest-name", name));
  const bars = element("span", "bars-cell");
  const bar = element("span", "bar rest");
  bar.style.width = `${(100 * rest.raw) / largest}%`;
  bars.append(bar);
  if (!rest.unknown && rest.post > 0) {
    const postBar = element("span", "bar post");
    postBar.style.width = `${(100 * rest.post) / largest}%`;
    bars.append(postBar);
  }
  const numbers = element("span", "numbers");
  const postText = rest.unknown || rest.post === null ? "—" : percent(rest.post);
  numbers.append(element("span", "raw-value", percent(rest.raw)), element("span", "post-value", postText));
  row.append(label, bars, numbers);
  item.append(row);
  return item;
}

// Where top-p and min-p cut, as the page's chain ran them: before the row at position `at`.
function cutMarks(chain) {
  const marks = [];
  for (const stage of chain.stages) {
    if (stage.name === "top_p" && stage.threshold !== undefined) {
      marks.push({ at: stage.kept, cumulative: stage.cumulative, threshold: stage.threshold,
        text: `top-p ${stage.threshold} cuts here: the tokens above are the fewest that hold ${percent(stage.threshold)} ` +
          "of the mass (as it saw it)" });
    } else if (stage.name === "min_p" && stage.threshold !== undefined) {
      marks.push({ at: stage.kept,
        text: `min-p cuts here: below, p < ${percent(stage.threshold)} (its setting × the top token's p)` });
    }
  }
  return marks;
}

function cutLine(cut) {
  const line = element("li", "cut-line", cut.text);
  line.dataset.stage = cut.cumulative ? "top_p" : "min_p";
  return line;
}

// "entropy 3.21 nats → 1.05 after the chain · 12 of 49,152 tokens possible, 87.3% of the raw mass"
function renderSummary(dist, chain, known) {
  const partial = dist.partial;
  let line = entropyText(dist);
  if (known) line += ` → ${chain.entropy.toFixed(2)} nats after the chain` + (chain.greedy ? " (greedy takes the top)" : "");
  line += " · ";
  if (partial) line += `the top ${count(partial.reported)} hold ${percent(partial.knownMass)} of the mass; the rest is not known · `;
  if (!known) {
    const names = chain.plan.stages.filter((stage) => !stage.local).map((stage) => stageName(stage.name));
    line += chain.pending
      ? `asking the server for the distribution after the chain (${names.join(", ")} run there)…`
      : `the server could not compute the distribution after the chain: ${chain.error}`;
  } else {
    line += `${count(chain.kept)} of ${count(partial ? partial.reported : dist.logits.length)}` +
      `${partial ? " reported" : ""} tokens possible, ${percent(chain.keptMass)} of the raw mass` +
      (chain.source === "server" ? " · computed by the server" : "");
  }
  $("dist-summary").textContent = line;
}

// "entropy 1.23 nats", or for a remote model, the bounds of what it can be.
function entropyText(dist) {
  if (!dist.partial) return `entropy ${dist.entropy.toFixed(2)} nats`;
  const [lowest, highest] = dist.partial.entropyBounds;
  return `entropy between ${lowest.toFixed(2)} and ${highest.toFixed(2)} nats ` +
    `(the server told its top ${dist.partial.reported})`;
}

// The chain as a pipeline: the model's tokens, each stage that is on with its settings and the tokens it
// keeps, then the selector.
function renderPipeline(dist, chain, known) {
  const box = $("pipeline");
  box.replaceChildren();
  const add = (className, name, detail) => {
    const item = element("li", className);
    item.append(element("span", "stage-name", name), element("span", "kept", detail));
    box.append(item);
    return item;
  };
  add("source", "model", `${count(dist.logits.length)} tokens`);
  const reports = known ? chain.stages : chain.plan.stages.map((stage) => ({ name: stage.name, kind: stage.kind }));
  const planned = new Map(chain.plan.stages.map((stage) => [stage.name, stage]));
  for (const stage of reports) {
    if (stage.name === "greedy") continue;
    const values = planned.has(stage.name) ? Object.entries(planned.get(stage.name).values)
      .map(([name, value]) => `${stageName(name)} ${value}`).join(", ") : "";
    // "top-p 0.9" names the stage by its settings; a constraint by its kind
    const name = stage.kind ? `${stageName(stage.name)} (${stageName(stage.kind)})` : values || stageName(stage.name);
    let detail = stage.kept === undefined ? (known ? "on the server" : "…") : `keeps ${count(stage.kept)}`;
    if (stage.removedMass !== undefined) detail += ` · removes ${removedShare(stage.removedMass)} of the raw mass`;
    add("stage", name, detail).dataset.stage = stage.name;
  }
  if (!reports.length) add("stage none", "no stage on", "keeps all");
  if (!known) add("select", "…", "");
  else if (chain.greedy) add("select", "greedy", "takes the top 1");
  else add("select", "draw", `one of ${count(chain.kept)}`);
}
