// The last hour at a glance: restarts per minute and the resources' states per minute,
// as two small SVG charts drawn here from GET /v1/glance (60 per-minute counters the
// daemon keeps), with the same numbers as a table for screen readers and keyboards.

import { get } from "./api.js";
import { clear, h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const STATES = ["RUNNING", "STARTING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "STOPPED"];
const WIDTH = 360;
const HEIGHT = 64;
const REFETCH_MS = 5000; // events refetch the minutes at most this often

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) {
    element.setAttribute(key, String(value));
  }
  element.append(...children);
  return element;
}

function clock(start) {
  return new Date(start * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function frame(label, max, bars) {
  return svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT + 14}`, width: WIDTH, height: HEIGHT + 14,
    role: "img", "aria-label": label, class: "chart" },
  svg("title", {}, label),
  svg("line", { x1: 0, y1: HEIGHT + 0.5, x2: WIDTH, y2: HEIGHT + 0.5, class: "axis" }),
  svg("text", { x: 0, y: HEIGHT + 12, class: "tick" }, "−60 min"),
  svg("text", { x: WIDTH, y: HEIGHT + 12, class: "tick", "text-anchor": "end" }, "now"),
  svg("text", { x: 2, y: 9, class: "tick" }, `max ${max}`),
  ...bars);
}

function restartsChart(minutes) {
  const max = Math.max(1, ...minutes.map((m) => m.restarts));
  const step = WIDTH / minutes.length;
  const bars = minutes.flatMap((m, i) => {
    if (m.restarts === 0) {
      return [];
    }
    const height = (HEIGHT - 12) * (m.restarts / max);
    return svg("rect", { x: i * step + 0.5, y: HEIGHT - height, width: Math.max(1, step - 1), height,
      class: "bar restarts" }, svg("title", {}, `${clock(m.start)}: ${m.restarts} restarts`));
  });
  const total = minutes.reduce((n, m) => n + m.restarts, 0);
  return frame(`Restarts per minute over the last hour: ${total} in all, at most ${max} in a minute`, max, bars);
}

function statesChart(minutes) {
  const totals = minutes.map((m) => (m.states ? Object.values(m.states).reduce((a, b) => a + b, 0) : 0));
  const max = Math.max(1, ...totals);
  const step = WIDTH / minutes.length;
  const bars = [];
  minutes.forEach((m, i) => {
    if (!m.states) {
      return;
    }
    let y = HEIGHT;
    for (const state of STATES) {
      const n = m.states[state] || 0;
      if (n > 0) {
        const height = (HEIGHT - 12) * (n / max);
        y -= height;
        bars.push(svg("rect", { x: i * step + 0.5, y, width: Math.max(1, step - 1), height,
          class: `bar fill-${state}` }, svg("title", {}, `${clock(m.start)}: ${n} ${state}`)));
      }
    }
  });
  const now = minutes[minutes.length - 1].states || {};
  const text = STATES.filter((s) => now[s]).map((s) => `${now[s]} ${s}`).join(", ") || "none";
  return frame(`Resources per state at each minute's end over the last hour; now: ${text}`, max, bars);
}

function legend() {
  return h("p", { class: "legend" }, STATES.map((s) => h("span", { class: `key fill-${s}` }, s)));
}

function table(minutes) {
  const kept = minutes.filter((m) => m.restarts || m.transitions || m.states);
  return h("details", {}, h("summary", {}, "The last hour as a table"),
    h("table", { "aria-label": "The last hour, minute by minute" },
      h("thead", {}, h("tr", {}, ["Minute", "Restarts", "Transitions", ...STATES].map(
        (t) => h("th", { scope: "col", class: "num" }, t)))),
      h("tbody", {}, kept.reverse().map((m) => h("tr", {},
        h("th", { scope: "row", class: "num" }, clock(m.start)),
        h("td", { class: "num" }, m.restarts),
        h("td", { class: "num" }, m.transitions),
        STATES.map((s) => h("td", { class: "num" }, m.states ? m.states[s] || 0 : "–")))))));
}

// A panel for a page: `element` to place, `paint()` on each repaint, `close()` when left.
export function glancePanel(hub, requestPaint) {
  const state = { minutes: null, error: null, fetched: 0, timer: null, turn: null };
  const element = h("section", { class: "glance", "aria-label": "The last hour at a glance" });

  async function load() {
    state.timer = null;
    state.fetched = performance.now();
    try {
      state.minutes = (await get("/v1/glance")).minutes;
      state.error = null;
    } catch (error) {
      state.error = error.message;
    }
    requestPaint();
  }

  function soon() {
    if (state.timer === null) {
      state.timer = setTimeout(load, Math.max(0, state.fetched + REFETCH_MS - performance.now()));
    }
  }

  const unsubscribe = hub.subscribe((event) => {
    if (event === null || event.subject === "resource") {
      soon();
    }
  });
  const now = Date.now();
  state.turn = setTimeout(function turn() { // each minute's census, just after it is taken
    load();
    state.turn = setTimeout(turn, 60_000);
  }, 60_000 - (now % 60_000) + 1500);
  load();

  let drawn = null;
  return {
    element,
    paint() {
      if (state.minutes === drawn) {
        return; // unchanged since the last repaint: the SVG stays as it is
      }
      drawn = state.minutes;
      if (state.error && !state.minutes) {
        clear(element, h("p", { class: "error" }, `charts: ${state.error}`));
        return;
      }
      if (!state.minutes) {
        return;
      }
      const open = element.querySelector("details")?.open;
      clear(element,
        h("figure", {}, h("figcaption", {}, "Restarts per minute, last hour"), restartsChart(state.minutes)),
        h("figure", {}, h("figcaption", {}, "Resources per state, last hour"), statesChart(state.minutes), legend()),
        table(state.minutes));
      element.querySelector("details").open = Boolean(open);
    },
    close() {
      unsubscribe();
      clearTimeout(state.timer);
      clearTimeout(state.turn);
    },
  };
}
