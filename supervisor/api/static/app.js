// The console's entry: sign-in, the hash router, the live event stream, and the one
// coalesced repaint of whichever view is shown.

import { session, signIn, signOut, whenSignedOut } from "./api.js";
import { Coalescer, EventHub } from "./live.js";
import { deephavenView } from "./deephaven.js";
import { environmentsView } from "./environments.js";
import { reloadView } from "./reload.js";
import { resourcesView, resourceView } from "./resources.js";
import { ResourceStore } from "./store.js";

const $ = (id) => document.getElementById(id);
const signInSection = $("sign-in");
const view = $("view");
const nav = $("nav");
const signOutButton = $("sign-out");
const live = $("live");

let who = null;
let hub = null;
let store = null;
let current = null; // the shown view's paint function
const coalescer = new Coalescer(() => current && current());
const tick = { timer: null };

function showSignIn(message = "") {
  who = null;
  if (current && current.close) {
    current.close();
  }
  current = null;
  if (hub !== null) {
    hub.close();
    hub = null;
  }
  if (store !== null) {
    store.close();
    store = null;
  }
  clearInterval(tick.timer);
  view.replaceChildren();
  nav.hidden = true;
  signOutButton.hidden = true;
  signInSection.hidden = false;
  $("sign-in-error").textContent = message;
  $("token").focus();
}

function start(signedIn) {
  who = signedIn;
  signInSection.hidden = true;
  nav.hidden = false;
  signOutButton.hidden = false;
  hub = new EventHub(
    (text) => {
      live.textContent = text;
    },
    async () => {
      if (who !== null && (await session()) === null) {
        showSignIn("The session has ended: sign in again.");
      }
    },
  );
  store = new ResourceStore(hub);
  store.changed = () => coalescer.request();
  hub.open();
  store.load();
  // Uptimes and lease times move with the clock: one repaint a second for them.
  tick.timer = setInterval(() => coalescer.request(), 1000);
  route();
}

function route() {
  if (who === null) {
    return;
  }
  if (current && current.close) {
    current.close();
  }
  const hash = location.hash || "#/resources";
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", hash.startsWith(link.getAttribute("href")));
    if (link.hasAttribute("aria-current")) {
      link.setAttribute("aria-current", "page");
    }
  }
  const resource = hash.match(/^#\/resource\/(.+)$/);
  if (resource) {
    current = resourceView(view, store, decodeURIComponent(resource[1]), who.access, hub, () => coalescer.request());
  } else if (hash.startsWith("#/deephaven")) {
    current = deephavenView(view, store, hub, who.access, () => coalescer.request());
  } else if (hash.startsWith("#/reload")) {
    current = reloadView(view, who.access, () => store.load());
  } else if (hash.startsWith("#/environments")) {
    current = environmentsView(view, hub, who.access, () => coalescer.request());
  } else {
    current = resourcesView(view, store, hub, () => coalescer.request());
  }
  current();
  $("main").focus({ preventScroll: true });
}

$("sign-in-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = $("token");
  try {
    const signedIn = await signIn(input.value.trim());
    input.value = "";
    start(signedIn);
  } catch (error) {
    input.select();
    $("sign-in-error").textContent = `Sign-in refused: ${error.message}`;
  }
});

signOutButton.addEventListener("click", async () => {
  try {
    await signOut();
  } finally {
    showSignIn("Signed out.");
  }
});

whenSignedOut((message) => showSignIn(message));
window.addEventListener("hashchange", route);

const existing = await session();
if (existing === null) {
  showSignIn();
} else {
  start(existing);
}
