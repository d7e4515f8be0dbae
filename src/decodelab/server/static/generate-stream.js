// decodelab web explorer: Generate N, streamed. The server sends each step as it is made (server-sent events:
// `data: {"step", "index"}`, then `data: {"state", "stopped"}`, then `data: [DONE]`); the page shows each row
// as it comes, with a live count and a Stop button. Stop asks the server to cancel between steps and keeps
// the rows made so far; a new session started meanwhile closes the stream (which cancels it too) and the
// answers of the old one are dropped (state.js isCurrent).
"use strict";

// N as typed: a whole number from 1 to the server's limit, else a message (never silently changed).
function generateCount() {
  const text = $("generate-count").value.trim();
  const n = Number(text);
  if (!text || !Number.isInteger(n) || n < 1 || n > page.maxGenerate) {
    throw new ApiError(`N must be a whole number from 1 to ${page.maxGenerate}, got ${text || "nothing"}`, 0);
  }
  return n;
}

async function generate() {
  const asked = generateCount();
  const session = currentSession();
  const run = { controller: new AbortController(), asked, got: 0, session, stopping: false, before: page.state.steps.length };
  page.generation = run;
  page.busy = "generate";
  page.lastGenerate = null;
  updateButtons();
  showProgress(run);
  let final = null;
  try {
    const { reply } = await apiStream(`/api/sessions/${session.id}/generate`, { count: asked, stream: true, ...stepBody(false) }, {
      secret: session.secret,
      signal: run.controller.signal,
      onEvent: (payload) => {
        if (!isCurrent(session)) return;
        if (payload.step) {
          run.got += 1;
          page.state.steps.push(payload.step);
          liveRender(run);
        } else if (payload.state) final = payload;
      },
    });
    if (reply) final = { state: reply.state, stopped: null }; // a server that does not stream
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  } finally {
    page.generation = null;
    if (run.frame) cancelAnimationFrame(run.frame); // the end redraws everything
  }
  if (!isCurrent(session)) return; // a new session took over: nothing of this one is shown
  if (!final) final = { state: (await api(`/api/sessions/${session.id}`, undefined, "GET", session.secret)) };
  if (!isCurrent(session)) return;
  const got = final.state.steps.length - run.before;
  page.lastGenerate = { asked, got, stopped: run.stopping || final.stopped === "cancelled" };
  showState(final.state);
}

// Stop: the server stops between steps; the stream then ends with the state so far. A server without
// /cancel gets the stream closed instead (which cancels it as well).
async function stopGeneration() {
  const run = page.generation;
  if (!run || run.stopping) return;
  run.stopping = true;
  showProgress(run);
  try {
    await api(`/api/sessions/${run.session.id}/cancel`, {}, "POST", run.session.secret);
  } catch (error) {
    run.controller.abort();
  }
}

// Redraw the panels a step changes once per frame (the bars wait for the end: a step has no logits).
function liveRender(run) {
  if (run.frame) return;
  run.frame = requestAnimationFrame(() => {
    run.frame = null;
    if (page.generation !== run || !isCurrent(run.session)) return;
    const tokens = sessionTokens(page.state);
    page.pending = pendingBytes(joinBytes(tokens.map((token) => token.bytes)));
    renderText(page.state, tokens);
    renderTokens(page.state, tokens);
    renderSteps(page.state);
    renderCounts(page.state);
    showProgress(run);
  });
}

function showProgress(run) {
  const line = $("stop-reason");
  line.classList.remove("stopped");
  line.textContent = run.stopping ? `Stopping after ${run.got} of ${run.asked}…` : `Generating: ${run.got} of ${run.asked}…`;
  $("bars").classList.add("stale");
}
