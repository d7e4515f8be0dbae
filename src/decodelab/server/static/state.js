// decodelab web explorer: the page's state, shared by the scripts loaded after this one. The page is plain
// deferred scripts, no build step, run in index.html's order: state, chain, utf8, api, format, controls,
// bars, tokens, history, generate-stream, app (which wires the events and starts), then views.
"use strict";

const $ = (id) => document.getElementById(id);

const page = {
  state: null, // the session state from the server
  secret: null, // that session's secret: the server answers only to the client that started it
  epoch: 0, // counts the sessions started: an answer for an older one is dropped (see isCurrent)
  dist: null, // the prepared next-token distribution of that state (chain.js prepareDistribution)
  pending: new Uint8Array(0), // the bytes of an unfinished character at the end of the text (utf8.js)
  lastGenerate: null, // {asked, got, stopped} of the last Generate N, for the stop line
  stages: [], // /api/info's stages, in the default order
  controls: [], // one per slider: {setting, stage, input, output}
  maxGenerate: 512, // the most steps one Generate N may ask for
  version: 0, // counts the states shown, so a late answer from the server is not shown for a newer state
  server: null, // the server's distribution for the bars: {key, reply, error, timer}
  constraint: null, // the constraint applied (Start or Apply): {kind, source} as config.constraint, or null
  busy: null, // null, "action" (one request running) or "generate" (a stream: Stop and Start still act)
  running: null, // the promise of the action running
  generation: null, // the Generate N running: {controller, asked, got, session}
  branches: [], // continuations taken back (undo, branching), to redo: {prefix: ids, tokens, steps}
};

// The session an action starts on: its answer is shown only while that session is still the page's.
function currentSession() {
  return page.state ? { id: page.state.id, secret: page.secret, epoch: page.epoch } : null;
}

function isCurrent(session) {
  return Boolean(session) && session.epoch === page.epoch && page.state && page.state.id === session.id;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}
