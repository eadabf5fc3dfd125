// Talking to the daemon: the session cookie authenticates (the browser sends it), and
// every request that changes something carries the session's CSRF token as a header.

let csrf = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message, problems = []) {
    super(message);
    this.status = status;
    this.code = code;
    this.problems = problems; // invalid_config: [{path, message}]
  }
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

async function failure(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "request failed";
  let problems = [];
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
      problems = body.error.problems || [];
    }
  } catch {
    // not the API's error shape: keep the status line
  }
  if (response.status === 401 && csrf !== null) {
    csrf = null;
    onSignedOut(message);
  }
  return new ApiError(response.status, code, message, problems);
}

export async function request(method, path, body) {
  const headers = { accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") {
    headers["x-csrf-token"] = csrf || "";
  }
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    throw await failure(response);
  }
  if (response.status === 204) {
    return null;
  }
  return response.json();
}

export const get = (path) => request("GET", path);
export const post = (path, body = {}) => request("POST", path, body);
export const del = (path) => request("DELETE", path);

// Who is signed in: {access, csrf}, or null.
export async function session() {
  const response = await fetch("/console/session", { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) {
    return null;
  }
  const who = await response.json();
  csrf = who.csrf;
  return who;
}

export async function signIn(token) {
  const who = await request("POST", "/console/session", { token });
  csrf = who.csrf;
  return who;
}

export async function signOut() {
  await request("DELETE", "/console/session");
  csrf = null;
}

// A text stream (the logs route with follow): calls `chunk(text)` as bytes arrive, until
// `signal` aborts it or the daemon ends it; resolves when it ends.
export async function follow(path, chunk, signal) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store", signal });
  if (!response.ok) {
    throw await failure(response);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      break;
    }
    chunk(decoder.decode(value, { stream: true }));
  }
}
