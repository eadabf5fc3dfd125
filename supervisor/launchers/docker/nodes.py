"""A swarm manager's view of its nodes: which are up, pushed by the manager's node events.

Why it is built this way:
- A lost node (its engine stopped, or cut off from the manager) is a fact only the
  manager has: it marks the node `down` after missed heartbeats (about 12 s here) and
  sends a `node update` event (`state.new`). The node's own engine may still answer (a
  partition), so its container events say nothing. One reader per manager follows the
  node events, started by the first caller that asks, in the engine's nursery.
- The event is only a signal: on each one, and on each (re)connect, the node list is
  read again, so a missed or reordered event cannot leave a stale state behind.
- A node the manager no longer lists (removed after it was lost) counts as down.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import structlog
import trio

from supervisor.config.types import BackoffConfig
from supervisor.launchers.docker.sdk import DockerError, EngineClient
from supervisor.supervision.policy import backoff_delay

log = structlog.get_logger("supervisor.docker")

RECONNECT_BACKOFF = BackoffConfig(initial=0.1, factor=2.0, max=5.0, jitter=0.0)


class NodeStates:
    """The swarm's nodes as the manager sees them: `ready`, `down`, `unknown`, ..."""

    def __init__(self, client: EngineClient, events_api: Any) -> None:
        self._client = client
        self._events_api = events_api
        self._limiter = trio.CapacityLimiter(1)
        self.states: dict[str, str] = {}
        self.known = False  # the node list was read at least once
        self._changed = trio.Event()

    def state(self, node_id: str) -> str:
        """`node_id`'s state; "unknown" before the list is read, "removed" once unlisted."""
        if not self.known:
            return "unknown"
        return self.states.get(node_id, "removed")

    async def wait_down(self, node_id: str) -> str:
        """Return `node_id`'s state once the manager reports it down (or removed)."""
        while (state := self.state(node_id)) not in ("down", "removed"):
            await self._changed.wait()
        return state

    async def refresh(self) -> None:
        """Read the node list again and wake whoever waits on a change."""
        nodes = await self._client.call("list nodes", self._client.api.nodes)
        states = {}
        for node in nodes:
            states[str(node["ID"])] = str((node.get("Status") or {}).get("State", "unknown"))
        for node_id, state in states.items():
            if self.states.get(node_id) != state and self.known:
                log.info("swarm_node_state", node=node_id[:12], state=state)
        self.states, self.known = states, True
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the manager's node events for ever, reading the list on each."""
        failures = 0
        wake = trio.Event()

        def pump(stream: Any) -> None:
            trio.from_thread.run_sync(wake.set)  # connected: read the list now
            for _ in stream:
                trio.from_thread.run_sync(wake.set)

        async def refresher() -> None:
            nonlocal wake
            while True:
                await wake.wait()
                wake = trio.Event()
                try:
                    await self.refresh()
                except DockerError as exc:
                    log.warning("swarm_nodes_unread", error=str(exc))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refresher)
            task_status.started()
            while True:
                open_events = partial(
                    self._events_api.events, decode=True, filters={"type": "node"}
                )
                try:
                    await self._client.read_stream(
                        open_events, pump, "follow node events", self._limiter
                    )
                    failures = 0
                except DockerError as exc:
                    if failures == 0:
                        log.warning("swarm_node_events_failed", error=str(exc))
                failures += 1
                await trio.sleep(backoff_delay(failures, RECONNECT_BACKOFF, 0.0))
