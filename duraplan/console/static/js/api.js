// The console's only way to the server: /v1 requests carrying the signed-in tenant's API key.
// The key lives in sessionStorage (this tab only, gone when it closes), never in a URL.

const KEY = "duraplan.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY);
}

export function signIn(key) {
  sessionStorage.setItem(KEY, key);
}

export function signOut() {
  sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

function headers(extra = {}) {
  const key = apiKey();
  return { Accept: "application/json", ...(key ? { Authorization: `Bearer ${key}` } : {}), ...extra };
}

// `path` is under /v1; `body` is sent as JSON. Resolves to the parsed body, rejects with ApiError.
export async function call(method, path, body = undefined) {
  const init = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const response = await fetch(`/v1${path}`, init);
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Server-sent events over fetch (EventSource cannot send the Authorization header). Calls
// `onEvent(name, data)` per event until the stream ends or `signal` aborts; rejects with ApiError.
export async function stream(path, onEvent, signal) {
  const response = await fetch(`/v1${path}`, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) {
    let problem = null;
    try { problem = await response.json(); } catch { /* not JSON */ }
    throw new ApiError(response.status, problem);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) {
        let parsed = null;
        try { parsed = JSON.parse(data.join("\n")); } catch { continue; }
        onEvent(name, parsed);
      }
    }
  }
}
