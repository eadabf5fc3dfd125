// Deephaven: the servers (kind deephaven... resources, live from the store) and the
// sessions of deephaven sandbox environments, with state and endpoint. Credentials stay
// on the daemon until a click asks for them (the full token only), and go on "Hide".

import { get } from "./api.js";
import { clear, h, since, stateBadge } from "./dom.js";
import { environmentsLoader } from "./pools.js";

const SUBJECTS = new Set(["environment", "sandbox", "session"]);

function credentialBox(creds) {
  return h("dl", { class: "facts credentials" },
    h("dt", {}, "Host"), h("dd", {}, h("code", {}, creds.host)),
    h("dt", {}, "Port"), h("dd", {}, h("code", {}, creds.port)),
    h("dt", {}, "Auth"), h("dd", {}, creds.auth_type),
    h("dt", {}, "Token"), h("dd", {}, creds.token === null ? "–" : h("code", { class: "secret" }, creds.token)));
}

export function deephavenView(root, store, hub, access, requestPaint) {
  const canAct = access === "full";
  const { state, load } = environmentsLoader({
    select: (all) => all.filter((env) => env.backend === "deephaven"),
    withSessions: canAct,
    loaded: requestPaint,
  });
  const shown = new Map(); // server name -> credentials (while shown) or an error text
  const servers = h("div");
  const sessions = h("div");
  const note = h("p", { class: "muted", role: "status" });
  clear(root, h("h1", {}, "Deephaven"), h("h2", {}, "Servers"), servers,
    h("h2", {}, "Sandbox sessions"), note, sessions);

  async function toggle(name) {
    if (shown.has(name)) {
      shown.delete(name);
    } else {
      try {
        shown.set(name, await get(`/v1/resources/${encodeURIComponent(name)}/credentials`));
      } catch (error) {
        shown.set(name, `credentials: ${error.message}`);
      }
    }
    requestPaint();
  }

  const unsubscribe = hub.subscribe((event) => {
    if (event === null || (SUBJECTS.has(event.subject) && state.environments.some(
      (env) => env.name === event.name || env.name === event.environment))) {
      load();
    }
  });
  load();

  function serverRow(server) {
    const creds = shown.get(server.name);
    const button = h("button", { type: "button", disabled: !canAct, "aria-expanded": creds !== undefined,
      onclick: () => toggle(server.name) }, creds === undefined ? "Show credentials" : "Hide");
    return h("tr", { "data-server": server.name },
      h("td", {}, h("a", { href: `#/resource/${encodeURIComponent(server.name)}` }, server.name)),
      h("td", {}, server.kind),
      h("td", {}, stateBadge(server.state)),
      h("td", {}, stateBadge(server.liveness)),
      h("td", {}, server.endpoint ? h("code", {}, server.endpoint) : "–"),
      h("td", { class: "num" }, server.state === "RUNNING" ? since(server.since) : "–"),
      h("td", {}, button, typeof creds === "string" ? h("p", { class: "error" }, creds)
        : creds ? credentialBox(creds) : null));
  }

  function sessionRows(env) {
    const list = state.sessions.get(env.name) || [];
    const now = Date.now() / 1000;
    return list.map((s) => h("tr", { "data-session": s.session_id },
      h("td", {}, env.name),
      h("td", {}, h("code", {}, s.session_id)),
      h("td", {}, stateBadge(s.state)),
      h("td", {}, s.endpoint ? h("code", {}, s.endpoint) : "–"),
      h("td", { class: "num" }, s.lease_expires_at === null ? "no lease" : `${Math.max(0, Math.round(s.lease_expires_at - now))}s`)));
  }

  const paint = () => {
    const found = [...store.byName.values()].filter((r) => r.kind.startsWith("deephaven"))
      .sort((a, b) => a.name.localeCompare(b.name));
    clear(servers, found.length === 0
      ? h("p", { class: "muted" }, store.loaded ? "No Deephaven server is configured (kind = \"deephaven\")." : "loading…")
      : h("table", { "aria-label": "Deephaven servers" },
        h("thead", {}, h("tr", {}, ["Name", "Kind", "State", "Probe", "Endpoint", "Uptime", "Credentials"].map(
          (t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, found.map(serverRow))));
    if (state.error && state.error.status !== 404) { // 404: no environments at all
      clear(note, h("span", { class: "error" }, state.error.message));
    } else {
      note.textContent = `${state.environments.length} deephaven environments` +
        (canAct ? "" : " (sessions are shown to the full token only)");
    }
    const rows = state.environments.flatMap(sessionRows);
    clear(sessions, rows.length === 0 ? h("p", { class: "muted" }, "No session in progress.")
      : h("table", { "aria-label": "Deephaven sessions" },
        h("thead", {}, h("tr", {}, ["Environment", "Session", "State", "Endpoint", "Lease left"].map(
          (t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows)));
  };
  paint.close = unsubscribe;
  return paint;
}
