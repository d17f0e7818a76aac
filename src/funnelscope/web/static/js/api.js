// The read API client: every request carries the read key from sessionStorage as a Bearer token.
// Errors become ApiError with a message that says what to do next.

const KEY_NAME = "funnelscope.read_key";

export function getKey() {
  return sessionStorage.getItem(KEY_NAME);
}

export function setKey(key) {
  sessionStorage.setItem(KEY_NAME, key);
}

export function clearKey() {
  sessionStorage.removeItem(KEY_NAME);
}

export class ApiError extends Error {
  constructor(status, message, detail = null) {
    super(message);
    this.status = status;
    this.detail = detail;
  }

  /** The key was refused (unknown, revoked, or a write key asking to read). */
  get isAuth() {
    return this.status === 401 || this.status === 403;
  }
}

function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params || {})) {
    if (value === undefined || value === null || value === "") continue;
    if (Array.isArray(value)) {
      if (value.length) search.set(name, value.join(","));
    } else {
      search.set(name, String(value));
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

function describe(status, body) {
  if (status === 401 || status === 403) {
    return "This key cannot read. Sign in with a read key (write keys only send events).";
  }
  if (status === 422 && body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${d.loc ? [].concat(d.loc).join(".") + ": " : ""}${d.msg}`)
      .join("; ");
  }
  if (status === 404) return "Not found: this server does not offer that endpoint.";
  if (body && typeof body.detail === "string") return body.detail;
  return `The server answered ${status}. Try again, or check the server log.`;
}

/**
 * Call the API. Returns parsed JSON, or the Response itself when `raw` is true.
 * @param {string} path e.g. "/api/v1/report"
 * @param {{params?: object, method?: string, body?: any, raw?: boolean, signal?: AbortSignal,
 *          key?: string}} options
 */
export async function api(path, options = {}) {
  const key = options.key ?? getKey();
  const headers = { Accept: options.raw ? "*/*" : "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path + query(options.params), {
      method: options.method || (body ? "POST" : "GET"),
      headers,
      body,
      signal: options.signal,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "Cannot reach the funnelscope server. Is `funnelscope serve` running?");
  }
  if (!response.ok) {
    let parsed = null;
    try {
      parsed = await response.json();
    } catch {
      parsed = null;
    }
    const error = new ApiError(response.status, describe(response.status, parsed), parsed?.detail);
    if (error.isAuth) document.dispatchEvent(new CustomEvent("fs:auth", { detail: error }));
    throw error;
  }
  return options.raw ? response : response.json();
}

/**
 * Read a server-sent-events stream with fetch (EventSource cannot send an Authorization
 * header). Calls onEvent({event, data}) per message until the signal aborts.
 */
export async function stream(path, { onEvent, onOpen, signal }) {
  const key = getKey();
  const headers = { Accept: "text/event-stream" };
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { headers, signal });
  if (!response.ok) {
    const error = new ApiError(response.status, describe(response.status, null));
    if (error.isAuth) document.dispatchEvent(new CustomEvent("fs:auth", { detail: error }));
    throw error;
  }
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue; // comment / keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
      if (data.length) onEvent({ event, data: data.join("\n") });
    }
  }
}
