// The sandbox environments as the console's views read them: the list, and for the full
// token each one's sessions. One load at a time: a load asked for during another runs once
// more after it (a burst of events costs two fetches, not one per event).

import { get } from "./api.js";

// Returns {state, load}: `state` holds `environments` (those `select` keeps), `sessions`
// (environment name -> its sessions; only `withSessions`) and `error` (the failed load's
// error, else null); `load()` refetches, then calls `loaded()`.
export function environmentsLoader({ select = (all) => all, withSessions, loaded }) {
  const state = { environments: [], sessions: new Map(), error: null };
  let loading = false;
  let again = false;

  async function load() {
    if (loading) {
      again = true;
      return;
    }
    loading = true;
    try {
      state.environments = select((await get("/v1/environments")).environments);
      if (withSessions) {
        const lists = await Promise.all(state.environments.map((env) =>
          get(`/v1/environments/${encodeURIComponent(env.name)}/sessions`).then((r) => r.sessions, () => [])));
        state.sessions = new Map(state.environments.map((env, i) => [env.name, lists[i]]));
      }
      state.error = null;
    } catch (error) {
      state.error = error;
    } finally {
      loading = false;
    }
    loaded();
    if (again) {
      again = false;
      setTimeout(load, 250);
    }
  }

  return { state, load };
}
