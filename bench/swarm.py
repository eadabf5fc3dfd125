"""Swarm sandboxes beside local docker ones: cold creation and warm acquire, as ratios.

Both backends run in the bench process, in the same run, on engines of their own: a
private 2-node swarm and a private single engine (tests/private_swarm.py and
tests/private_dockerd.py, the fixtures the tests use; nothing touches the machine's
engine but `docker save` of the sandbox image). Each engine runs the same dockerd with
the same image loaded, so the ratio is what the swarm's path adds: a service, its
placement, and the node's engine reached through the manager's answer.

*Cold*: one sandbox created (`backend.create`: until an exec proved it runs) then
stopped, `creates` times in a row. *Warm*: an environment of `pool` warm sandboxes; one
client acquires a session and releases it, `acquires` times, each acquire timed from the
call to the session handed out (the released sandbox is READY again before the next).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.launchers.docker import DockerEngine, open_docker_engine
from supervisor.observability.logging import configure_logging
from supervisor.sandbox.backends import Backend
from supervisor.sandbox.backends.docker import DockerBackend
from supervisor.sandbox.backends.swarm import SwarmBackend
from supervisor.sandbox.environment import Environment, open_environment
from tests.conftest import PRIVATE_ENGINE_IMAGE
from tests.private_dockerd import PrivateDockerd, save_image, sweep_stale
from tests.private_swarm import PrivateSwarm, sweep_stale_swarms

POOL = 2


def settings(backend: str, hosts: list[str]) -> EnvironmentConfig:
    base: dict[str, Any] = {
        "backend": backend,
        "min_ready": POOL,
        "max_size": POOL,
        "acquire_timeout": 60,
        "keepalive_interval": 600,
        "housekeep_interval": 600,
        "output_limit": 4096,
    }
    if backend == "docker":
        base["docker"] = {"image": PRIVATE_ENGINE_IMAGE}
    else:
        base["swarm"] = {
            "image": PRIVATE_ENGINE_IMAGE,
            "manager": {"host": hosts[0]},
            "nodes": [{"host": host} for host in hosts],
        }
    return EnvironmentConfig.model_validate(base)


def backend_of(kind: str, config: EnvironmentConfig, engines: list[DockerEngine]) -> Backend:
    if kind == "docker":
        assert config.docker is not None
        return DockerBackend(
            engines[0], config.docker, environment="bench", output_limit=config.output_limit
        )
    assert config.swarm is not None
    return SwarmBackend(
        engines[0], engines, config.swarm, environment="bench", output_limit=config.output_limit
    )


def summary(samples: list[float]) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))] * 1000,
    }


async def _ready(env: Environment) -> None:
    while env.stats()["sandboxes"]["READY"] < POOL:  # noqa: ASYNC110 - no event for the count
        await trio.sleep(0.01)


async def measure(kind: str, hosts: list[str], creates: int, acquires: int) -> dict[str, Any]:
    """Cold creates and warm acquires through `kind` ("docker" or "swarm") on `hosts`."""
    config = settings(kind, hosts)
    instance_id = f"bench-{uuid.uuid4().hex[:12]}"
    async with AsyncExitStack() as stack:
        engines = [
            await stack.enter_async_context(open_docker_engine(host, instance_id)) for host in hosts
        ]
        backend = backend_of(kind, config, engines)
        cold = []
        for i in range(creates):
            began = time.perf_counter()
            instance = await backend.create(f"cold/{i}")
            cold.append(time.perf_counter() - began)
            await instance.stop()
        warm = []
        async with open_environment("bench", config, backend) as env:
            for _ in range(acquires):
                with trio.fail_after(120):
                    await _ready(env)
                began = time.perf_counter()
                async with env.session():
                    warm.append(time.perf_counter() - began)
    return {"cold": summary(cold), "warm": summary(warm)}


def run(workdir: Path, creates: int, acquires: int) -> dict[str, Any]:
    """Build the engines, measure both backends, tear everything down."""
    configure_logging("console", "warning", sys.stderr)  # the tables own stdout
    sweep_stale()
    sweep_stale_swarms()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tar = save_image(PRIVATE_ENGINE_IMAGE, Path(tmp) / "image.tar")
        began = time.monotonic()
        swarm = PrivateSwarm.create(2)
        try:
            swarm.load(tar)
            formed = time.monotonic() - began
            local = PrivateDockerd.create()
            try:
                local.load(tar)
                docker = trio.run(measure, "docker", [local.host], creates, acquires)
            finally:
                local.close()
            hosts = [node.host for node in swarm.nodes]
            on_swarm = trio.run(measure, "swarm", hosts, creates, acquires)
        finally:
            swarm.close()
    return {"pool": POOL, "swarm_setup_s": formed, "docker": docker, "swarm": on_swarm}
