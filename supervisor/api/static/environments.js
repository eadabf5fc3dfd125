// The environments: per pool a small gauge (ready, busy, starting), waiters, sessions with
// their lease time left (release one), and restart. Refetched on the pool's events, at
// most once per repaint.

import { del, post } from "./api.js";
import { clear, duration, h, stateBadge } from "./dom.js";
import { environmentsLoader } from "./pools.js";

const STARTING = ["CREATED", "SETTING_UP"];
const BUSY = ["ACQUIRED", "IN_SESSION", "EXITING_SESSION"];
const SUBJECTS = new Set(["environment", "sandbox", "session"]);

function sum(counts, names) {
  return names.reduce((total, name) => total + (counts[name] || 0), 0);
}

function gauge(env) {
  const counts = env.sandboxes;
  const parts = { ready: counts.READY || 0, busy: sum(counts, BUSY), starting: sum(counts, STARTING) };
  const scale = Math.max(env.max_size, parts.ready + parts.busy + parts.starting, 1);
  const text = `${parts.ready} ready, ${parts.busy} busy, ${parts.starting} starting of at most ${env.max_size}`;
  return [
    h("div", { class: "gauge", role: "img", "aria-label": text },
      Object.entries(parts).map(([name, n]) =>
        h("span", { class: name, style: null, "data-width": (100 * n) / scale, title: `${n} ${name}` }))),
    h("p", { class: "counts" }, text, `; ${env.waiters} waiting; ${env.active_sessions} sessions`),
  ];
}

function sessionsTable(sessions, release, canAct) {
  if (sessions.length === 0) {
    return h("p", { class: "muted" }, "No session in progress.");
  }
  const now = Date.now() / 1000;
  return h(
    "table",
    { "aria-label": "Sessions" },
    h("thead", {}, h("tr", {}, ["Session", "Sandbox", "Age", "Lease left", "Expires in", "Running", ""].map(
      (title) => h("th", { scope: "col" }, title)))),
    h("tbody", {}, sessions.map((s) => h(
      "tr", { "data-session": s.session_id },
      h("td", {}, h("code", {}, s.session_id)),
      h("td", {}, h("code", {}, s.sandbox_id)),
      h("td", { class: "num" }, duration(now - s.started_at)),
      h("td", { class: "num" }, s.lease_expires_at === null ? "no lease" : duration(s.lease_expires_at - now)),
      h("td", { class: "num" }, duration(s.expires_at - now)),
      h("td", { class: "num" }, s.running),
      h("td", {}, h("button", { type: "button", class: "danger", disabled: !canAct,
        onclick: () => release(s.session_id) }, "Release")),
    ))),
  );
}

export function environmentsView(root, hub, access, requestPaint) {
  const canAct = access === "full";
  const { state, load } = environmentsLoader({ withSessions: canAct, loaded: requestPaint });
  const messages = new Map(); // environment name -> the result of the last action on it
  const list = h("div");
  const note = h("p", { class: "muted", role: "status" });
  clear(root, h("h1", {}, "Environments"), note, list);

  async function restart(name) {
    messages.set(name, "restarting…");
    requestPaint();
    try {
      const env = await post(`/v1/environments/${encodeURIComponent(name)}/restart`);
      messages.set(name, `restart: accepted (status ${env.status})`);
    } catch (error) {
      messages.set(name, `restart failed: ${error.message}`);
    }
    load();
  }

  async function release(envName, sessionId) {
    try {
      await del(`/v1/sessions/${encodeURIComponent(sessionId)}`);
      messages.set(envName, `released ${sessionId}`);
    } catch (error) {
      messages.set(envName, `release failed: ${error.message}`);
    }
    load();
  }

  const unsubscribe = hub.subscribe((event) => {
    if (event === null || SUBJECTS.has(event.subject)) {
      load();
    }
  });
  load();

  const paint = () => {
    if (state.error) {
      clear(note, h("span", { class: "error" }, state.error.message));
    } else {
      note.textContent = `${state.environments.length} environments`;
    }
    clear(list, ...state.environments.map((env) => h(
      "section", { class: "env", "data-env": env.name, "aria-label": `Environment ${env.name}` },
      h("h2", {}, env.name, " ", stateBadge(env.status), h("span", { class: "muted" }, ` ${env.backend}`)),
      gauge(env),
      env.error ? h("p", { class: "error" }, env.error) : null,
      h("div", { class: "actions" },
        h("button", { type: "button", disabled: !canAct, onclick: () => restart(env.name) }, "Restart environment"),
        h("span", { class: "result", role: "status" }, messages.get(env.name) || "")),
      canAct ? sessionsTable(state.sessions.get(env.name) || [], (id) => release(env.name, id), canAct)
        : h("p", { class: "muted" }, "Sessions are shown to the full token only."),
    )));
    // Widths set here rather than in a style attribute (the CSP allows no inline style).
    for (const bar of list.querySelectorAll(".gauge span")) {
      bar.style.width = `${bar.dataset.width}%`;
    }
  };
  paint.close = unsubscribe;
  return paint;
}
