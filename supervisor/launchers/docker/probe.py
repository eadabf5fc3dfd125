"""One look at an engine, for `supervisor check --online`: does it answer, and what is it
in its swarm. A fresh client each time, closed at once: nothing here is kept."""

from __future__ import annotations

from dataclasses import dataclass

import trio

from supervisor.launchers.docker.sdk import EngineClient, TLSFiles, docker_errors, make_clients


@dataclass(frozen=True, slots=True)
class EngineFacts:
    """What an engine said of itself: its swarm node id ("" in none), whether it is a
    manager, and (a manager's) the ids of its swarm's nodes."""

    node_id: str
    manager: bool
    nodes: frozenset[str]


async def probe_engine(host: str | None, tls: TLSFiles | None, timeout: float) -> EngineFacts:
    """Ask `host` who it is (its info, and a manager's node list), within `timeout`.

    Raises:
        DockerError: the engine is unreachable, refused the client, or failed.
    """
    what = host or "the default Docker engine"
    with docker_errors(f"connect to {what}"):
        api, events_api = await trio.to_thread.run_sync(make_clients, host, tls, timeout)
    try:
        client = EngineClient(api, timeout=timeout, max_threads=1)
        info = await client.call(f"ask {what} for its info", api.info)
        swarm = info.get("Swarm") or {}
        manager = bool(swarm.get("ControlAvailable"))
        nodes: frozenset[str] = frozenset()
        if manager:
            listed = await client.call(f"list the nodes of {what}", api.nodes)
            nodes = frozenset(str(n["ID"]) for n in listed)
        return EngineFacts(str(swarm.get("NodeID") or ""), manager, nodes)
    finally:
        api.close()
        events_api.close()
