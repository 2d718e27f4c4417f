// The admin API as the pages use it: same origin, JSON in and out, the operator's token (kept
// for this browser session only) on every call, and errors that say which kind they are.

const TOKEN_KEY = "hookrelay.token";

export class ApiError extends Error {
  // kind: "unauthorized" (401), "unreachable" (no answer), or "http" (any other error status).
  constructor(kind, status, code, message) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.code = code;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

// Calls `path` (under the admin origin) and returns the parsed JSON body.
export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    throw new ApiError("unreachable", 0, "unreachable",
      `Cannot reach the hookrelay admin API at ${location.host}. Is the sidecar running?`);
  }
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (e) { json = null; }
  if (resp.ok) return json;
  const err = (json && json.error) || {};
  const message = err.message || `${method} ${path} answered ${resp.status}`;
  if (resp.status === 401) throw new ApiError("unauthorized", 401, err.code || "unauthorized", message);
  throw new ApiError("http", resp.status, err.code || "error", message);
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);

// A query string from an object, leaving out empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

