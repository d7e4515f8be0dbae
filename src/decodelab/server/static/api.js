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

async function api(path, body, method, secret = page.secret) {
  const response = await send(path, body, method, secret);
  if (!response.ok) throw await refusal(path, response);
  try {
    return await response.json();
  } catch (error) {
    return null;
  }
}

// POST `body` and read the reply's events: onEvent(payload) per `data:` frame until `data: [DONE]`. A server
// that answers with JSON instead (no streaming) gives that JSON back as {reply}.
async function apiStream(path, body, { secret = page.secret, signal, onEvent }) {
  const response = await send(path, body, "POST", secret, signal);
  if (!response.ok) throw await refusal(path, response);
  if (!(response.headers.get("content-type") || "").includes("text/event-stream")) {
    return { reply: await response.json() };
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
      const payload = JSON.parse(data);
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
