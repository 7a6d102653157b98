// The only way the dashboard reaches the server: the public REST API under /api/v1.
// The browser sends the HttpOnly session cookie by itself; every request also carries
// the CSRF header the API demands of cookie-authenticated unsafe requests.

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && body.message) || `the server answered ${status}`;
    super(message);
    this.status = status;
    this.code = body && body.code;
    this.field = body && body.field;
  }
}

// No read of this API takes long: one unanswered this long is on a dead connection.
const GET_TIMEOUT_MS = 15000;

let onUnauthenticated = () => {};
export function whenSignedOut(callback) { onUnauthenticated = callback; }

export async function api(method, path, body, { quiet401 = false } = {}) {
  const options = { method, credentials: "same-origin", headers: { "X-Virtuai-Csrf": "1" } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  // A GET that failed at the network level (a kept-alive connection closed under it, the
  // server restarting) or that got no answer in GET_TIMEOUT_MS (a connection that died
  // silently) is safe to ask again; anything else is reported at once.
  const attempts = method === "GET" ? 3 : 1;
  let response;
  for (let attempt = 1; ; attempt++) {
    try {
      const signal = method === "GET" ? AbortSignal.timeout(GET_TIMEOUT_MS) : undefined;
      response = await fetch(`/api/v1${path}`, { ...options, signal });
      break;
    } catch (error) {
      if (attempt >= attempts) throw new ApiError(0, { message: "the server cannot be reached" });
      await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
    }
  }
  if (response.status === 204) return null;
  let data = null;
  try { data = await response.json(); } catch (error) { data = null; }
  if (!response.ok) {
    if (response.status === 401 && !quiet401) onUnauthenticated();
    throw new ApiError(response.status, data);
  }
  return data;
}

export const get = (path, opts) => api("GET", path, undefined, opts);
export const post = (path, body) => api("POST", path, body === undefined ? {} : body);
export const put = (path, body) => api("PUT", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

// Query strings without empty values.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// Tenants the signed-in user may submit work to: where it is more than a viewer, and
// every tenant for an administrator.
export async function submittableTenants(me) {
  const own = me.tenants.filter((t) => t.role !== "viewer").map((t) => t.tenant);
  if (!me.is_admin) return own;
  try {
    const all = (await get("/tenants")).map((t) => t.name);
    return [...own, ...all.filter((t) => !own.includes(t))];
  } catch (e) { return own; }
}
