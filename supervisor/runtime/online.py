"""`supervisor check --online`: the endpoints a config names answer, and are what it says.

Offline validation proves a config is well formed; this proves it can run here: each
Docker engine a resource or environment uses answers, a swarm environment's `manager` is
a swarm manager, and each of its `nodes` answers and is a node of that manager's swarm.
Each problem names the key path of the endpoint, as offline problems do. Each engine
host is asked once, all at once, each within `timeout`.
"""

from __future__ import annotations

from collections.abc import Iterator

import trio

from supervisor.config.schema import Config
from supervisor.errors import ConfigProblem
from supervisor.launchers.docker import DockerError, EngineFacts, TLSFiles, probe_engine


def _engines(config: Config) -> Iterator[tuple[str, str | None]]:
    """(key path, engine host) for every engine the config uses (None: the local one)."""
    for name, resource in config.resources.items():
        for host in resource.docker_hosts():
            where = "docker_host" if hasattr(resource, "docker_host") else "kind"
            yield f"resources.{name}.{where}", host
    for name, env in config.environments.items():
        if env.swarm is not None:
            yield f"environments.{name}.swarm.manager", env.swarm.manager.host
            for index, node in enumerate(env.swarm.nodes):
                yield f"environments.{name}.swarm.nodes.{index}", node.host
        elif env.docker is not None:
            yield f"environments.{name}.docker.docker_host", env.docker.docker_host
        else:
            for host in env.docker_hosts():
                yield f"environments.{name}.backend", host


async def check_online(config: Config, *, timeout: float = 10.0) -> list[ConfigProblem]:
    """Every endpoint of `config` that does not answer, or is not what the config says."""
    tls = {
        host: TLSFiles(str(t.cert), str(t.key), str(t.ca) if t.ca else None)
        for host, t in config.docker_tls().items()
    }
    facts: dict[str | None, EngineFacts | DockerError] = {}

    async def ask(host: str | None) -> None:
        try:
            facts[host] = await probe_engine(host, tls.get(host) if host else None, timeout)
        except DockerError as exc:
            facts[host] = exc

    async with trio.open_nursery() as nursery:
        for host in config.docker_hosts():
            nursery.start_soon(ask, host)
    problems = []
    for path, host in _engines(config):
        found = facts[host]
        if isinstance(found, DockerError):
            problems.append(ConfigProblem(path, f"the engine does not answer: {found}"))
    for name, env in config.environments.items():
        if env.swarm is None:
            continue
        path = f"environments.{name}.swarm"
        manager = facts[env.swarm.manager.host]
        if isinstance(manager, DockerError):
            continue  # said above
        if not manager.manager:
            problems.append(
                ConfigProblem(
                    f"{path}.manager",
                    f"engine {env.swarm.manager.host} is not a swarm manager",
                )
            )
            continue
        for index, node in enumerate(env.swarm.nodes):
            found = facts[node.host]
            if isinstance(found, DockerError):
                continue
            if found.node_id not in manager.nodes:
                what = f"node {found.node_id[:12]}" if found.node_id else "in no swarm"
                problems.append(
                    ConfigProblem(
                        f"{path}.nodes.{index}",
                        f"engine {node.host} is {what}, not a node of the manager's swarm",
                    )
                )
    return problems
