// The REST API as the page uses it. Every URL is relative ("api/jobs"), so the page works wherever it is
// served: at the root, or under a proxy's sub-path (the document's base URL decides).

import { parseJson, stringifyJson } from "./json.js";

/** An error answer of the API: {"error": {code, message, hint?, problems?}} with its HTTP status. */
export class ApiError extends Error {
  constructor(status, body) {
    const error = body?.error ?? {};
    super(error.message || (status ? `the server answered ${status}` : "the server cannot be reached"));
    this.status = status;
    this.code = error.code ?? (status ? "http_error" : "network");
    this.hint = error.hint ?? null;
    this.problems = Array.isArray(error.problems) ? error.problems : [];
  }
}

let onUnauthorized = null;

/** Called (once per answer) when the API says we are not logged in (401): the page shows its log-in form. */
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

/** "a b/c#d.ipynb" → "a%20b/c%23d.ipynb": each segment escaped, the slashes kept. */
export function encodePath(path) {
  return String(path ?? "")
    .split("/")
    .filter((part) => part !== "")
    .map(encodeURIComponent)
    .join("/");
}

function withQuery(path, query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query ?? {})) {
    if (value != null && value !== "") params.set(key, String(value));
  }
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

export async function request(method, path, { query, json, body } = {}) {
  const init = { method, headers: { accept: "application/json" }, credentials: "same-origin", cache: "no-store" };
  if (json !== undefined) {
    init.body = stringifyJson(json); // integers past 2^53 (BigInt) go exact
    init.headers["content-type"] = "application/json";
  } else if (body !== undefined) {
    init.body = body;
  }
  let response;
  try {
    response = await fetch(withQuery(path, query), init);
  } catch {
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? parseJson(text) : null; // a job's parameters keep their large integers exact
  } catch {
    data = null; // a proxy's HTML error page, say: the status tells enough
  }
  if (!response.ok) {
    const error = new ApiError(response.status, data);
    if (response.status === 401 && onUnauthorized) onUnauthorized(error);
    throw error;
  }
  return data;
}

export const api = {
  get: (path, query) => request("GET", path, { query }),
  post: (path, json, query) => request("POST", path, { json, query }),
  put: (path, body, query) => request("PUT", path, { body, query }),
  patch: (path, json) => request("PATCH", path, { json }),
  delete: (path, query) => request("DELETE", path, { query }),
};

export const urls = {
  contents: (path) => (encodePath(path) ? `api/contents/${encodePath(path)}` : "api/contents"),
  download: (path) => `files/${encodePath(path)}`,
  parameters: (path) => `api/notebooks/${encodePath(path)}/parameters`,
  job: (id) => `api/jobs/${Number(id)}`,
  report: (id) => `api/jobs/${Number(id)}/report`,
  notebook: (id) => `api/jobs/${Number(id)}/notebook`,
};
