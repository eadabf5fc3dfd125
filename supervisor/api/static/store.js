// The resources as the page knows them: loaded once, then kept current from the event
// stream. An event says the new state at once; the fields it does not carry (pid,
// restarts) are fetched again for the resources it names, once per repaint at most.

import { get } from "./api.js";

const MAX_SINGLE_FETCHES = 8; // more dirty resources than this: one list fetch instead

export class ResourceStore {
  constructor(hub) {
    this.byName = new Map();
    this.groupsOf = new Map(); // resource name -> the [groups] it belongs to
    this.loaded = false;
    this.error = null;
    this.changed = () => {};
    this.dirty = new Set();
    this.seen = new Map(); // name -> events applied (to detect one during a fetch)
    this.fetching = false;
    this.unsubscribe = hub.subscribe((event) => this.apply(event));
  }

  async load() {
    try {
      const [{ resources }, { groups }] = await Promise.all([get("/v1/resources"), get("/v1/groups")]);
      this.byName = new Map(resources.map((r) => [r.name, r]));
      this.groupsOf = new Map();
      for (const [group, members] of Object.entries(groups)) {
        for (const member of members) {
          this.groupsOf.set(member, [...(this.groupsOf.get(member) || []), group]);
        }
      }
      this.loaded = true;
      this.error = null;
    } catch (error) {
      this.error = error.message;
    }
    this.changed();
  }

  apply(event) {
    if (event === null) {
      this.load(); // events were lost: start again from the list
      return;
    }
    if (event.subject !== "resource") {
      return;
    }
    const known = this.byName.get(event.name);
    if (known === undefined) {
      this.dirty.add(event.name); // new since the list (a reload): fetch it
    } else {
      known.state = event.to;
      known.since = event.time;
      known.detail = event.detail || event.reason || known.detail;
    }
    this.seen.set(event.name, (this.seen.get(event.name) || 0) + 1);
    this.dirty.add(event.name);
    this.changed();
    this.refresh();
  }

  async refresh() {
    if (this.fetching || this.dirty.size === 0) {
      return;
    }
    this.fetching = true;
    const names = [...this.dirty];
    this.dirty.clear();
    const before = new Map(names.map((n) => [n, this.seen.get(n) || 0]));
    try {
      let fresh;
      if (names.length > MAX_SINGLE_FETCHES) {
        fresh = (await get("/v1/resources")).resources;
      } else {
        const one = (name) =>
          get(`/v1/resources/${encodeURIComponent(name)}`).catch((error) =>
            error.status === 404 ? { name, gone: true } : Promise.reject(error),
          );
        fresh = await Promise.all(names.map(one));
      }
      for (const resource of fresh) {
        this.merge(resource, before);
      }
    } catch (error) {
      this.error = error.message;
    } finally {
      this.fetching = false;
    }
    this.changed();
    if (this.dirty.size > 0) {
      setTimeout(() => this.refresh(), 250);
    }
  }

  merge(resource, before) {
    if (resource.gone) {
      this.byName.delete(resource.name);
      return;
    }
    const known = this.byName.get(resource.name);
    const raced = before.has(resource.name) && (this.seen.get(resource.name) || 0) !== before.get(resource.name);
    if (known !== undefined && raced) {
      // An event came while this was in flight: it is newer than the answer's state.
      known.pid = resource.pid;
      known.restarts = resource.restarts;
      this.dirty.add(resource.name);
    } else {
      this.byName.set(resource.name, resource);
    }
  }

  close() {
    this.unsubscribe();
  }
}
