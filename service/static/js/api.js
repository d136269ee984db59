// The API client: JSON in and out, RFC 9457 problems as errors, optional routes found in OpenAPI.

/** An API error: the problem's detail as message, its field errors kept for forms. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
    this.errors = problem?.errors || [];
  }
}

export async function api(path, { method = "GET", body, type, signal } = {}) {
  const headers = {};
  let payload = body;
  if (body !== undefined && type) headers["content-type"] = type;
  else if (body !== undefined && !(body instanceof FormData) && !(body instanceof Blob)) {
    headers["content-type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body: payload, signal });
  if (r.status === 401) signIn();
  const isJson = (r.headers.get("content-type") || "").includes("json");
  const data = isJson ? await r.json() : await r.text();
  if (!r.ok) throw new ApiError(r.status, isJson ? data : { detail: data });
  return data;
}

/** The sign-in expired or was never made (tokens are on): back to the form, then here. */
export function signIn() {
  location.assign(`/login?next=${encodeURIComponent(location.pathname + location.hash)}`);
}

let me = null;

/** Who the dashboard is signed in as and its scopes (asked once per page load); null if unknown. */
export function session() {
  me ??= api("/api/dashboard/session").catch(() => null);
  return me;
}

let openapi = null;

/** The routes this service has, from its OpenAPI document (read once per page load). */
export function routes() {
  openapi ??= fetch("/openapi.json")
    .then((r) => (r.ok ? r.json() : { paths: {} }))
    .catch(() => ({ paths: {} }));
  return openapi;
}

/** Whether the service answers `method path` (a path as OpenAPI writes it). */
export async function hasRoute(method, path) {
  const doc = await routes();
  return Boolean(doc.paths?.[path]?.[method.toLowerCase()]);
}

/** The OpenAPI operation of a route, or null. */
export async function operation(method, path) {
  const doc = await routes();
  return doc.paths?.[path]?.[method.toLowerCase()] || null;
}

/** Resolve a `$ref` of the OpenAPI document. */
export async function resolveRef(ref) {
  const doc = await routes();
  return ref.replace(/^#\//, "").split("/").reduce((o, k) => o?.[k], doc);
}
