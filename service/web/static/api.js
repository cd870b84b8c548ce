// The service's HTTP API as the viewer uses it: the bearer token lives in sessionStorage (this
// tab only, gone when it closes) and travels in the Authorization header, never in a URL.
const TOKEN_KEY = "medrobust.token";

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (value) => sessionStorage.setItem(TOKEN_KEY, value),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

/** An answer other than 2xx: its status and the service's `detail`, in words. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

// FastAPI's validation errors are a list of {loc, msg}; the service's own errors a string.
function describe(detail) {
  if (Array.isArray(detail)) {
    return detail.map((e) => `${(e.loc || []).filter((p) => p !== "body").join(".")}: ${e.msg}`).join("; ");
  }
  return typeof detail === "string" ? detail : JSON.stringify(detail);
}

export async function request(path, { method = "GET", json, form, accept = "application/json" } = {}) {
  const headers = { Accept: accept };
  const bearer = token.get();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await fetch(path, { method, headers, body, credentials: "omit", cache: "no-store" });
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch {
      // not JSON: keep the status text
    }
    throw new ApiError(response.status, detail);
  }
  return response;
}

export const getJSON = async (path) => (await request(path)).json();
export const sendJSON = async (path, json, method = "POST") => (await request(path, { method, json })).json();
export const sendForm = async (path, form) => (await request(path, { method: "POST", form })).json();
