// The resources table and one resource's page (its facts, actions and live log tail).

import { ApiError, follow, get, post } from "./api.js";
import { clear, h, since, stateBadge } from "./dom.js";
import { glancePanel } from "./glance.js";

const LOG_KEEP = 2000; // lines kept in the page's log tail
const EVENTS_KEEP = 20; // recent events shown on a resource's page
const SIGNALS = ["HUP", "USR1", "USR2", "INT", "TERM", "QUIT", "KILL", "CONT", "STOP"];
const COLUMNS = ["Name", "Kind", "State", "Probe", "Group", "PID", "Uptime", "Restarts", "Detail"];
const NUMERIC = new Set(["PID", "Uptime", "Restarts"]);

function row(resource, groups) {
  const link = h("a", { href: `#/resource/${encodeURIComponent(resource.name)}` }, resource.name);
  return h(
    "tr",
    { "data-name": resource.name },
    h("td", {}, link),
    h("td", {}, resource.kind),
    h("td", { class: "state-cell" }, stateBadge(resource.state)),
    h("td", { class: "probe-cell" }, stateBadge(resource.liveness)),
    h("td", { class: "group-cell" }, (groups || []).join(", ")),
    h("td", { class: "num" }, resource.pid ?? "–"),
    h("td", { class: "num" }, resource.state === "RUNNING" ? since(resource.since) : "–"),
    h("td", { class: "num" }, resource.restarts),
    h("td", { class: "detail" }, resource.detail || ""),
  );
}

export function resourcesView(root, store, hub, requestPaint) {
  const glance = glancePanel(hub, requestPaint);
  const body = h("tbody");
  const summary = h("p", { class: "muted", role: "status" });
  const table = h(
    "table",
    { "aria-label": "Resources" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        COLUMNS.map((title) => h("th", { scope: "col", class: NUMERIC.has(title) ? "num" : null }, title)),
      ),
    ),
    body,
  );
  clear(root, h("h1", {}, "Resources"), glance.element, summary, table);
  const paint = () => {
    glance.paint();
    if (store.error && !store.loaded) {
      clear(summary, h("span", { class: "error" }, store.error));
      return;
    }
    const resources = [...store.byName.values()].sort((a, b) => a.name.localeCompare(b.name));
    const counts = {};
    for (const r of resources) {
      counts[r.state] = (counts[r.state] || 0) + 1;
    }
    const parts = Object.entries(counts).map(([state, n]) => `${n} ${state}`);
    summary.textContent = `${resources.length} resources: ${parts.join(", ") || "none"}`;
    clear(body, ...resources.map((r) => row(r, store.groupsOf.get(r.name))));
  };
  paint.close = glance.close;
  return paint;
}

function facts(resource, groups) {
  const pairs = [
    ["State", stateBadge(resource.state)],
    ["Probe", stateBadge(resource.liveness)],
    ["Kind", resource.kind],
    ["Groups", (groups || []).join(", ") || "–"],
    ["PID", resource.pid ?? "–"],
    ["Since", `${new Date(resource.since * 1000).toLocaleString()} (${since(resource.since)})`],
    ["Restarts", resource.restarts],
    ["Detail", resource.detail || "–"],
  ];
  if (resource.endpoint) {
    pairs.push(["Endpoint", resource.endpoint]);
  }
  return pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", { "data-fact": term }, value)]);
}

function eventItem(event) {
  const when = new Date(event.time * 1000).toLocaleTimeString();
  const why = event.detail || event.reason;
  return h("li", { "data-seq": event.seq }, h("time", {}, when), " ", event.from, " → ",
    stateBadge(event.to), why ? h("span", { class: "muted" }, ` ${why}`) : null);
}

// The resource's last events: what the daemon's ring kept, then the live ones.
function recentEvents(name, hub, changed) {
  const state = { events: [], note: "loading…" };
  const seen = new Set();
  const add = (event) => {
    if (!seen.has(event.seq)) {
      seen.add(event.seq);
      state.events.push(event);
      state.events = state.events.slice(-EVENTS_KEEP);
    }
  };
  const unsubscribe = hub.subscribe((event) => {
    if (event !== null && event.subject === "resource" && event.name === name) {
      add(event);
      changed();
    }
  });
  get(`/v1/events?follow=0&name=${encodeURIComponent(name)}`)
    .then(({ events }) => {
      const live = state.events;
      state.events = [];
      for (const event of [...events, ...live].sort((a, b) => a.seq - b.seq)) {
        add(event);
      }
      state.note = "";
    }, (error) => {
      state.note = `events: ${error.message}`;
    })
    .finally(changed);
  return { state, close: unsubscribe };
}

export function resourceView(root, store, name, access, hub, requestPaint) {
  const info = h("dl", { class: "facts" });
  const result = h("span", { class: "result", role: "status", "aria-live": "polite" });
  const log = h("pre", { class: "log", tabindex: "0", "aria-label": "Output (live)" });
  const stream = h(
    "select",
    { id: "stream" },
    h("option", { value: "stdout" }, "stdout"),
    h("option", { value: "stderr" }, "stderr"),
  );
  const logNote = h("p", { class: "muted", role: "status" });
  let tail = null;

  const eventList = h("ol", { class: "events", "aria-label": "Recent events" });
  const eventNote = h("p", { class: "muted", role: "status" });
  const recent = recentEvents(name, hub, requestPaint);
  const signalChoice = h("select", { id: "signal" }, SIGNALS.map((s) => h("option", { value: s }, s)));

  async function act(action, body = {}, done = (taken) => `accepted (state ${taken.state})`) {
    result.className = "result";
    result.textContent = `${action}…`;
    try {
      const taken = await post(`/v1/resources/${encodeURIComponent(name)}/${action}`, body);
      result.className = "result ok";
      result.textContent = `${action}: ${done(taken)}`;
    } catch (error) {
      result.className = "result error";
      result.textContent = `${action} failed: ${error.message}`;
    }
  }

  const sendSignal = () => act("signal", { signal: signalChoice.value },
    (sent) => `SIG${sent.signal.replace(/^SIG/, "")} sent to pid ${sent.pid}`);

  function startTail() {
    if (tail !== null) {
      tail.abort();
    }
    tail = new AbortController();
    log.textContent = "";
    logNote.textContent = "";
    const path = `/v1/resources/${encodeURIComponent(name)}/logs?stream=${stream.value}&lines=200&follow=1`;
    follow(path, (text) => appendLog(text), tail.signal)
      .then(() => {
        logNote.textContent = "the log stream ended";
      })
      .catch((error) => {
        if (error.name === "AbortError") {
          return;
        }
        logNote.textContent = error instanceof ApiError && error.code === "no_output"
          ? "no output is kept for this resource (log_output is off)"
          : `log: ${error.message}`;
      });
  }

  function appendLog(text) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.append(text);
    if (log.childNodes.length > 200) {
      log.normalize(); // one text node, trimmed below
      const lines = log.textContent.split("\n");
      if (lines.length > LOG_KEEP) {
        log.textContent = lines.slice(-LOG_KEEP).join("\n");
      }
    }
    if (atBottom) {
      log.scrollTop = log.scrollHeight;
    }
  }

  const buttons = ["start", "stop", "restart"].map((action) =>
    h("button", { type: "button", "data-action": action, disabled: access !== "full",
      class: action === "stop" ? "danger" : null, onclick: () => act(action) }, action[0].toUpperCase() + action.slice(1)),
  );
  stream.addEventListener("change", startTail);
  const canAct = access === "full";
  clear(
    root,
    h("p", {}, h("a", { href: "#/resources" }, "← Resources")),
    h("h1", {}, name),
    info,
    h("div", { class: "actions" }, buttons,
      h("label", { for: "signal", class: "signal-label" }, "Signal"), signalChoice,
      h("button", { type: "button", "data-action": "signal", disabled: !canAct, onclick: sendSignal }, "Send"),
      result,
      canAct ? null : h("span", { class: "muted" }, "(the read-only token cannot act)")),
    h("h2", {}, "Recent events"),
    eventList,
    eventNote,
    h("h2", {}, "Output"),
    h("p", {}, h("label", { for: "stream" }, "Stream "), stream),
    log,
    logNote,
  );
  startTail();
  const paint = () => {
    const resource = store.byName.get(name);
    if (resource === undefined) {
      clear(info, h("dt", {}, "State"), h("dd", {}, store.loaded ? "no such resource" : "loading…"));
      return;
    }
    clear(info, ...facts(resource, store.groupsOf.get(name)));
    clear(eventList, ...recent.state.events.slice().reverse().map(eventItem));
    eventNote.textContent = recent.state.note || (recent.state.events.length ? "" : "no events kept");
  };
  paint.close = () => {
    recent.close();
    if (tail) {
      tail.abort();
    }
  };
  return paint;
}

