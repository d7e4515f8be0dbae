// decodelab web explorer: requests to the server. `api` is one JSON request; `apiStream` reads a
// server-sent event stream (Generate N), calling back once per `data:` frame.
"use strict";

function apiKey() {
  return localStorage.getItem("decodelab-api-key") || "";
}

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

function requestHeaders(path, body, secret) {
  const headers = {};
  if (apiKey()) headers["Authorization"] = `Bearer ${apiKey()}`;
  // A session answers only to the client that started it: its secret came back when it was created.
  if (secret && path.startsWith("/api/sessions/")) headers["X-Session-Secret"] = secret;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  return headers;
}

async function send(path, body, method, secret, signal) {
  try {
    return await fetch(path, {
      method: method || (body === undefined ? "GET" : "POST"),
      headers: requestHeaders(path, body, secret),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(`cannot reach the server (${error.message}): is decodelab serve still running?`, 0);
  }
}

async function refusal(path, response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch (error) {
    payload = null;
  }
  const message = payload && payload.error && payload.error.message;
  if (response.status === 401) $("key-box").hidden = false;
  return new ApiError(message || `${path} failed with HTTP ${response.status}`, response.status);
}

// JSON with its whole numbers kept exact: a seed is 62 bits, past a double's 53, so an unsafe integer stays its
// digits (JSON.rawJSON: read with wholeNumber, and written back exactly by JSON.stringify).
function parseJson(text) {
  if (typeof JSON.rawJSON !== "function") return JSON.parse(text);
  return JSON.parse(text, (key, value, context) =>
    typeof value === "number" && !Number.isSafeInteger(value) && context && /^-?\d+$/.test(context.source)
      ? JSON.rawJSON(context.source) : value);
}

function wholeNumber(value) {
  return value && value.rawJSON !== undefined ? value.rawJSON : String(value);
}

async function api(path, body, method, secret = page.secret) {
  const response = await send(path, body, method, secret);
  if (!response.ok) throw await refusal(path, response);
  const text = await response.text();
  try {
    return parseJson(text);
  } catch (error) {
    return null;
  }
}

// The answer's text as the server sent it (a trace to save: its numbers exactly).
async function apiText(path, secret = page.secret) {
  const response = await send(path, undefined, "GET", secret);
  if (!response.ok) throw await refusal(path, response);
  return response.text();
}

// POST `body` and read the reply's events: onEvent(payload) per `data:` frame until `data: [DONE]`. A server
// that answers with JSON instead (no streaming) gives that JSON back as {reply}.
async function apiStream(path, body, { secret = page.secret, signal, onEvent }) {
  const response = await send(path, body, "POST", secret, signal);
  if (!response.ok) throw await refusal(path, response);
  if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
    return { reply: parseJson(await response.text()) };
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return {};
    buffer = (buffer + value).replace(/\r\n/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = frame.split("\n").filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") {
        reader.cancel().catch(() => {});
        return {};
      }
      const payload = parseJson(data);
      if (payload.error) throw new ApiError(payload.error.message || String(payload.error), 0);
      onEvent(payload);
    }
  }
}

function showError(message) {
  const line = $("error");
  line.textContent = message ? String(message).split("\n")[0] : "";
  line.title = message ? String(message) : "";
  line.hidden = !message;
}
