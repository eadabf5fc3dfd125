"""Swarm sandboxes on a real 2-node swarm (tests/private_swarm.py): spread, exec, files,
death and replacement.

The swarm is the run's private one; each test's services and containers carry the test's
own instance id, and the swarm is emptied after each test, so nothing leaks.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.launchers.docker import DockerEngine, open_docker_engine
from supervisor.sandbox.backends.docker import ENVIRONMENT_LABEL, SANDBOX_LABEL
from supervisor.sandbox.backends.swarm import SwarmBackend
from supervisor.sandbox.environment import Environment, open_environment
from tests.conftest import PRIVATE_ENGINE_IMAGE
from tests.integration.test_daemon import daemon
from tests.private_swarm import PrivateSwarm

pytestmark = pytest.mark.slow

WAIT = 90.0  # generous: two CPU hogs may run beside this


def settings(swarm: PrivateSwarm, **overrides: Any) -> EnvironmentConfig:
    base: dict[str, Any] = {
        "backend": "swarm",
        "min_ready": 1,
        "max_size": 2,
        "acquire_timeout": 60,
        "keepalive_interval": 60,
        "housekeep_interval": 60,
        "output_limit": 4096,
        "swarm": {
            "image": PRIVATE_ENGINE_IMAGE,
            "manager": {"host": swarm.manager.host},
            "nodes": [{"host": node.host} for node in swarm.nodes],
        },
    }
    return EnvironmentConfig.model_validate({**base, **overrides})


@asynccontextmanager
async def engines(swarm: PrivateSwarm) -> AsyncIterator[list[DockerEngine]]:
    """One engine client per node (the first is the manager), for one test's instance."""
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    async with AsyncExitStack() as stack:
        yield [
            await stack.enter_async_context(open_docker_engine(node.host, instance_id))
            for node in swarm.nodes
        ]


@asynccontextmanager
async def environment(
    swarm: PrivateSwarm, nodes: list[DockerEngine], **overrides: Any
) -> AsyncIterator[Environment]:
    config = settings(swarm, **overrides)
    assert config.swarm is not None
    backend = SwarmBackend(
        nodes[0], nodes, config.swarm, environment="env", output_limit=config.output_limit
    )
    with trio.fail_after(WAIT):
        async with open_environment("env", config, backend) as env:
            yield env


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the pool's counts have no event of their own
            await trio.sleep(0.05)


def services(swarm: PrivateSwarm) -> list[str]:
    return swarm.manager.docker("service", "ls", "--format", "{{.Name}}").split()


async def test_a_pool_of_six_spreads_over_both_nodes_and_serves_exec_and_files(
    private_swarm: PrivateSwarm, tmp_path: Path
) -> None:
    """Six sandboxes come up as labelled one-replica services spread over both nodes; a
    session execs and moves a file through its node's engine; released, it is READY again."""
    (tmp_path / "note.txt").write_text("hello swarm\n")
    started = trio.current_time()
    async with (
        engines(private_swarm) as nodes,
        environment(private_swarm, nodes, min_ready=6, max_size=6) as env,
    ):
        cold = trio.current_time() - started
        assert env.stats()["sandboxes"]["READY"] == 6
        assert len(services(private_swarm)) == 6
        labels = private_swarm.manager.docker(
            "service", "ls", "--format", "{{json .}}", "--filter",
            f"label=supervisor.instance={nodes[0].instance_id}",
        )  # fmt: skip
        assert len(labels.splitlines()) == 6
        per_node = [len(node.docker("ps", "--quiet").split()) for node in private_swarm.nodes]
        assert sorted(per_node) == [3, 3], per_node  # the scheduler spreads one-replica services
        warm = trio.current_time()
        async with env.session() as session:
            acquired = trio.current_time() - warm
            connection = session.connection()
            assert connection["node_id"] in {n.node_id() for n in private_swarm.nodes}
            result = await session.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
            assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
            await session.sandbox.instance_put(tmp_path / "note.txt", "in/note.txt")
            read = await session.run_script("cat in/note.txt; id -u; pwd")
            assert read.stdout == "hello swarm\n65534\n/work\n"
            node = next(n for n in private_swarm.nodes if n.node_id() == connection["node_id"])
            inspected = node.docker(
                "inspect", "--format",
                "{{index .Config.Labels \"" + SANDBOX_LABEL + "\"}} "
                "{{index .Config.Labels \"" + ENVIRONMENT_LABEL + "\"}} "
                "{{.HostConfig.PidsLimit}} {{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}",
                connection["container_id"],
            ).split()  # fmt: skip
            assert inspected == [session.sandbox.id, "env", "256", "true", "[ALL]"]
        await until(lambda: env.stats()["sandboxes"]["READY"] == 6)
    print(f"swarm: cold pool of 6 {cold:.2f} s, warm acquire {acquired * 1000:.1f} ms")
    assert services(private_swarm) == []


async def test_a_killed_task_container_is_replaced_on_the_swarm(
    private_swarm: PrivateSwarm,
) -> None:
    """`docker kill` of a task's container on its node takes the sandbox OFFLINE (seen on
    that node's event stream); a new generation replaces it and the old service is gone."""
    async with engines(private_swarm) as nodes, environment(private_swarm, nodes) as env:
        async with env.session() as session:
            first = session.sandbox
            connection = session.connection()
        node = next(n for n in private_swarm.nodes if n.node_id() == connection["node_id"])
        node.docker("kill", connection["container_id"])
        with trio.fail_after(WAIT):
            await first.offline.wait()
        assert "died" in str(first.state_error)
        await until(lambda: env.stats()["sandboxes"]["READY"] == 1)
        async with env.session() as session:
            assert session.sandbox.id == "env/0:1"
            assert session.connection()["service"] != connection["service"]
            assert (await session.exec(["true"])).exit_code == 0
        assert services(private_swarm) == [session.connection()["service"]]


def task_containers(swarm: PrivateSwarm) -> set[str]:
    """The swarm service each task container on any node belongs to."""
    names = set()
    for node in swarm.nodes:
        out = node.docker(
            "ps", "--all", "--format", '{{.Label "com.docker.swarm.service.name"}}'
        )  # fmt: skip
        names |= set(out.split())
    return names


async def test_after_a_sigkill_the_next_run_leaves_nothing_of_the_last_on_any_node(
    private_swarm: PrivateSwarm, tmp_path: Path
) -> None:
    """A daemon SIGKILLed with a swarm pool up leaves services behind; its next start
    removes them and their containers on every node before its own pool comes up, and a
    SIGTERM then leaves no service and no container anywhere."""
    nodes = ", ".join(f'{{ host = "{node.host}" }}' for node in private_swarm.nodes)
    config = (
        "[daemon]\n"
        "[environments.pool]\n"
        'backend = "swarm"\nmin_ready = 2\nmax_size = 2\n'
        "[environments.pool.swarm]\n"
        f'image = "{PRIVATE_ENGINE_IMAGE}"\n'
        f'manager = {{ host = "{private_swarm.manager.host}" }}\n'
        f"nodes = [{nodes}]\n"
    )
    async with daemon(tmp_path, config) as first:
        await first.until_log("daemon_ready", timeout=WAIT)
        old = set(services(private_swarm))
        assert len(old) == 2
        first.proc.kill()
        await first.proc.wait()
    assert set(services(private_swarm)) == old  # nobody removed them
    async with daemon(tmp_path, config) as second:
        await second.until_log("daemon_ready", timeout=WAIT)
        new = set(services(private_swarm))
        assert len(new) == 2
        assert not new & old
        assert task_containers(private_swarm) == new
        second.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(WAIT):
            assert await second.proc.wait() == 0
    assert services(private_swarm) == []
    assert task_containers(private_swarm) == set()
