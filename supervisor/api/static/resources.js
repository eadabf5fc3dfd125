// The resources table and one resource's page (its facts, actions and live log tail).

import { ApiError, follow, post } from "./api.js";
import { clear, duration, h, since, stateBadge } from "./dom.js";

const LOG_KEEP = 2000; // lines kept in the page's log tail

function row(resource) {
  const link = h("a", { href: `#/resource/${encodeURIComponent(resource.name)}` }, resource.name);
  return h(
    "tr",
    { "data-name": resource.name },
    h("td", {}, link),
    h("td", {}, resource.kind),
    h("td", { class: "state-cell" }, stateBadge(resource.state)),
    h("td", { class: "num" }, resource.pid ?? "–"),
    h("td", { class: "num" }, resource.state === "RUNNING" ? since(resource.since) : "–"),
    h("td", { class: "num" }, resource.restarts),
    h("td", { class: "detail" }, resource.detail || ""),
  );
}

export function resourcesView(root, store) {
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
        ["Name", "Kind", "State", "PID", "Uptime", "Restarts", "Detail"].map((title) =>
          h("th", { scope: "col", class: ["PID", "Uptime", "Restarts"].includes(title) ? "num" : null }, title),
        ),
      ),
    ),
    body,
  );
  clear(root, h("h1", {}, "Resources"), summary, table);
  return () => {
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
    clear(body, ...resources.map(row));
  };
}

function facts(resource) {
  const pairs = [
    ["State", stateBadge(resource.state)],
    ["Liveness", stateBadge(resource.liveness)],
    ["Kind", resource.kind],
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

export function resourceView(root, store, name, access) {
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

  async function act(action) {
    result.className = "result";
    result.textContent = `${action}…`;
    try {
      const taken = await post(`/v1/resources/${encodeURIComponent(name)}/${action}`);
      result.className = "result ok";
      result.textContent = `${action}: accepted (state ${taken.state})`;
    } catch (error) {
      result.className = "result error";
      result.textContent = `${action} failed: ${error.message}`;
    }
  }

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
  clear(
    root,
    h("p", {}, h("a", { href: "#/resources" }, "← Resources")),
    h("h1", {}, name),
    info,
    h("div", { class: "actions" }, buttons, result,
      access !== "full" ? h("span", { class: "muted" }, "(the read-only token cannot act)") : null),
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
    clear(info, ...facts(resource));
  };
  paint.close = () => tail && tail.abort();
  return paint;
}

