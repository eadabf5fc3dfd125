// Reload in two steps: the dry-run plan (what restarts, what changes in place, what
// stays), then "apply this plan", which sends the plan's hash back so that the daemon
// applies that plan or none (409 plan_changed if the file changed since it was shown).

import { ApiError, post } from "./api.js";
import { clear, h } from "./dom.js";

const RESOURCE_ROWS = [
  ["restarted", "Restart", "stopped and started again with the new settings"],
  ["updated", "Change in place", "same process; policy, probes or timeouts change"],
  ["added", "Start", "new resources"],
  ["removed", "Stop and remove", "gone from the file"],
  ["unchanged", "Stay as they are", "untouched"],
];
const ENVIRONMENT_ROWS = [
  ["recreated", "Recreate", "sandboxes replaced"],
  ["resized", "Change in place", "sizes, timeouts or leases; sandboxes kept"],
  ["added", "Start", "new environments"],
  ["removed", "Stop and remove", "gone from the file"],
  ["unchanged", "Stay as they are", "untouched"],
];
const SHOWN_NAMES = 50; // a long list (1,000 unchanged) shows its count and the first ones

function names(list) {
  if (list.length === 0) {
    return h("span", { class: "muted" }, "none");
  }
  const shown = list.slice(0, SHOWN_NAMES).map((n) => h("code", {}, n));
  const more = list.length > SHOWN_NAMES ? [` and ${list.length - SHOWN_NAMES} more`] : [];
  return h("span", { class: "names" }, shown.flatMap((c, i) => (i ? [", ", c] : [c])), more);
}

function planTable(label, rows, plan) {
  return h("table", { class: "plan", "aria-label": label },
    h("thead", {}, h("tr", {}, ["What", "How many", "Which"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map(([key, title, note]) => h("tr", { "data-plan": key },
      h("th", { scope: "row" }, title, h("div", { class: "muted small" }, note)),
      h("td", { class: "num" }, plan[key].length),
      h("td", {}, names(plan[key]))))));
}

export function reloadView(root, access, onApplied) {
  const canAct = access === "full";
  const result = h("p", { class: "result", role: "status", "aria-live": "polite" });
  const planBox = h("div", { class: "plan-box" });
  const state = { plan: null, busy: false };
  const planButton = h("button", { type: "button", disabled: !canAct, onclick: () => makePlan() }, "Show the plan");
  const applyButton = h("button", { type: "button", class: "danger", disabled: true, onclick: () => apply() },
    "Apply this plan");

  function say(text, kind = "") {
    result.className = `result ${kind}`;
    result.textContent = text;
  }

  function problems(error) {
    return error instanceof ApiError && error.problems.length
      ? h("ul", { class: "problems" }, error.problems.map((p) => h("li", {}, h("code", {}, p.path), ": ", p.message)))
      : null;
  }

  function showPlan(plan) {
    const daemonKeys = plan.daemon_restart_needed;
    clear(planBox,
      h("h2", {}, "Resources"), planTable("Resources in the plan", RESOURCE_ROWS, plan),
      h("h2", {}, "Environments"), planTable("Environments in the plan", ENVIRONMENT_ROWS, plan.environments),
      daemonKeys.length ? h("p", { class: "warn" }, "Needs a daemon restart to take effect: ",
        names(daemonKeys.map((k) => `daemon.${k}`))) : null,
      h("p", { class: "muted small" }, "Plan ", h("code", { "data-plan-hash": plan.hash }, plan.hash.slice(0, 19)),
        "… made from the running config and the file as it is now."));
  }

  async function makePlan(note = "") {
    state.plan = null;
    applyButton.disabled = true;
    say("reading the config file…");
    try {
      state.plan = await post("/v1/reload", { dry_run: true });
      showPlan(state.plan);
      applyButton.disabled = !canAct;
      say(note || "This is what applying will do. Nothing has changed yet.", note ? "error" : "");
    } catch (error) {
      clear(planBox, problems(error));
      say(`No plan: ${error.message}`, "error");
    }
  }

  async function apply() {
    if (state.plan === null) {
      return;
    }
    applyButton.disabled = true;
    say("applying…");
    try {
      const done = await post("/v1/reload", { plan: state.plan.hash });
      const changed = done.added.length + done.removed.length + done.restarted.length + done.updated.length;
      say(`Applied: ${changed} resources changed, ${done.unchanged.length} unchanged.`, "ok");
      state.plan = null;
      onApplied();
    } catch (error) {
      if (error instanceof ApiError && error.code === "plan_changed") {
        await makePlan("Not applied: the config file changed since this plan was made. This is the " +
          "new plan: review it and apply again.");
        return;
      }
      clear(planBox, problems(error));
      say(`Not applied: ${error.message}`, "error");
    }
  }

  clear(root,
    h("h1", {}, "Reload the config"),
    h("p", {}, "Read the config file again, see what would change, then apply exactly that. " +
      "If the file changes between the two, nothing is applied."),
    h("div", { class: "actions" }, planButton, applyButton,
      canAct ? null : h("span", { class: "muted" }, "(the read-only token cannot reload)")),
    result,
    planBox);
  if (canAct) {
    makePlan();
  }
  return () => {};
}
