"""Docker sandboxes against a real engine: pool, exec, isolation, death, files, shutdown.

Every container carries the test's own instance id; the fixture removes whatever still
carries it, so a failing test leaks nothing into the shared engine.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import docker.errors
import pytest
import requests
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import SandboxStateError, StartError
from supervisor.launchers.docker import DockerEngine, DockerError, open_docker_engine
from supervisor.launchers.docker.sdk import docker_errors
from supervisor.sandbox.backends.docker import (
    ENVIRONMENT_LABEL,
    SANDBOX_LABEL,
    DockerBackend,
    SandboxConfigError,
    classify,
)
from supervisor.sandbox.environment import Environment, open_environment
from tests.integration.test_docker import docker_cli, labelled, remove_labelled

IMAGE = "supervisor-test/sandbox:bookworm"  # built by tests/provision.sh
WAIT = 30.0


@pytest.fixture
async def engine() -> AsyncIterator[DockerEngine]:
    instance_id = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with open_docker_engine(None, instance_id) as engine:
            assert engine.engine_up
            yield engine
    finally:
        await remove_labelled(instance_id)


def settings(**overrides: Any) -> EnvironmentConfig:
    base: dict[str, Any] = {
        "backend": "docker",
        "min_ready": 1,
        "max_size": 2,
        "acquire_timeout": 20,
        "keepalive_interval": 60,
        "housekeep_interval": 60,
        "output_limit": 4096,
        "docker": {"image": IMAGE},
    }
    return EnvironmentConfig.model_validate({**base, **overrides})


@asynccontextmanager
async def environment(engine: DockerEngine, **overrides: Any) -> AsyncIterator[Environment]:
    config = settings(**overrides)
    assert config.docker is not None
    backend = DockerBackend(
        engine, config.docker, environment="env", output_limit=config.output_limit
    )
    with trio.fail_after(WAIT):
        async with open_environment("env", config, backend) as env:
            yield env


async def until(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - the pool's counts have no event of their own
            await trio.sleep(0.05)


async def inspect(container_id: str) -> Any:
    return json.loads(await docker_cli("inspect", container_id))[0]


async def test_pool_comes_up_with_min_ready_labelled_containers(engine: DockerEngine) -> None:
    """min_ready containers run at start, labelled with their environment and sandbox."""
    started = trio.current_time()
    async with environment(engine, min_ready=2) as env:
        elapsed = trio.current_time() - started
        assert env.stats()["sandboxes"]["READY"] == 2
        ids = await labelled(engine.instance_id)
        assert len(ids) == 2
        infos = [await inspect(i) for i in ids]
        labels = sorted(info["Config"]["Labels"][SANDBOX_LABEL] for info in infos)
        assert labels == ["env/0:0", "env/1:0"]
        for info in infos:
            assert info["Config"]["Labels"][ENVIRONMENT_LABEL] == "env"
            assert info["HostConfig"]["Init"] is True
            assert info["HostConfig"]["PidsLimit"] == 256
    assert elapsed < 15, f"two sandboxes took {elapsed:.2f}s"


async def test_exec_reports_exit_code_streams_and_env(engine: DockerEngine) -> None:
    """exec returns the exit code and both streams as text; env reaches the command."""
    async with environment(engine) as env, env.session() as session:
        result = await session.exec(
            ["sh", "-c", 'echo "out $A"; echo err >&2; exit 3'], env={"A": "1"}
        )
        assert (result.exit_code, result.stdout, result.stderr) == (3, "out 1\n", "err\n")
        assert not result.timed_out
        assert not result.truncated
        started = trio.current_time()
        result = await session.exec(["echo", "$HOME;", "no shell"])
        round_trip = trio.current_time() - started
        assert result.stdout == "$HOME; no shell\n"
        script = await session.run_script("echo $HOME; pwd")
        assert script.stdout == "/work\n/work\n"
    assert round_trip < 2, f"an exec took {round_trip:.3f}s"


async def test_exec_timeout_and_output_truncation(engine: DockerEngine) -> None:
    """A command past its timeout is killed and reported; output beyond the limit is cut."""
    async with environment(engine) as env, env.session() as session:
        result = await session.exec(["sh", "-c", "echo before; sleep 30"], timeout=1)
        assert result.timed_out
        assert result.exit_code is None
        assert result.duration_s < 5
        result = await session.exec(["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"])
        assert result.truncated
        assert result.stdout == "x" * 4096
        assert result.exit_code == 0


async def test_network_none_and_read_only_rootfs_with_writable_workdir(
    engine: DockerEngine,
) -> None:
    """A sandbox has no network, cannot write its root filesystem, and can write /work."""
    async with environment(engine) as env, env.session() as session:
        nets = await session.exec(["ls", "/sys/class/net"])
        assert nets.stdout.split() == ["lo"]
        denied = await session.exec(["touch", "/etc/evil"])
        assert denied.exit_code != 0
        assert "Read-only file system" in denied.stderr
        wrote = await session.run_script("echo hi > note && cat note && touch /tmp/t")
        assert (wrote.exit_code, wrote.stdout) == (0, "hi\n")
        full = await session.run_script("head -c 300M /dev/zero > big")
        assert full.exit_code != 0  # the workdir is a tmpfs capped at tmpfs_size


async def test_a_sandbox_runs_unprivileged_by_default(engine: DockerEngine) -> None:
    """Not root, no capability at all, no_new_privs: setuid and raw sockets gain nothing."""
    async with environment(engine) as env, env.session() as session:
        who = await session.exec(["id", "-u"])
        assert who.stdout.strip() == "65534"
        status = await session.exec(
            ["grep", "-E", "^(CapEff|CapBnd|NoNewPrivs)", "/proc/self/status"]
        )
        fields = dict(line.split(":\t") for line in status.stdout.splitlines())
        assert fields == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}
        chown = await session.exec(["chown", "0", "."])
        assert chown.exit_code != 0  # no CAP_CHOWN, even on its own workdir


async def test_a_runtime_the_engine_lacks_is_a_config_error(engine: DockerEngine) -> None:
    """`runtime = "runsc"` on an engine without gVisor: refused at once, nothing left."""
    with pytest.raises(SandboxConfigError, match="runsc"):
        async with environment(engine, docker={"image": IMAGE, "runtime": "runsc"}):
            pass
    assert await labelled(engine.instance_id) == []


async def test_killed_container_is_replaced_by_a_new_generation(engine: DockerEngine) -> None:
    """`docker kill` of a sandbox's container takes it OFFLINE; a new generation replaces it."""
    async with environment(engine) as env:
        async with env.session() as session:
            first = session.sandbox
            container = session.connection()["container_id"]
        await docker_cli("kill", container)
        with trio.fail_after(WAIT):
            await first.offline.wait()
        assert first.state_error is not None
        assert "died" in str(first.state_error)
        await until(lambda: env.stats()["sandboxes"]["READY"] == 1)
        async with env.session() as session:
            assert session.sandbox.id == "env/0:1"
            assert (await session.exec(["true"])).exit_code == 0


async def test_put_copies_a_file_and_a_directory(engine: DockerEngine, tmp_path: Path) -> None:
    """put copies a file (as a name or into a directory) and a directory's contents."""
    (tmp_path / "one.txt").write_text("one\n")
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "two.txt").write_text("two\n")
    async with environment(engine) as env, env.session() as session:
        sandbox = session.sandbox
        await sandbox.instance_put(tmp_path / "one.txt", "renamed.txt")
        await sandbox.instance_put(tmp_path / "one.txt", "dir/")
        await sandbox.instance_put(tree, "copied")
        result = await session.run_script(
            "cat renamed.txt dir/one.txt copied/sub/two.txt; stat -c %U copied/sub/two.txt"
        )
        assert result.stdout == "one\none\ntwo\nnobody\n"  # the container's user owns them
        with pytest.raises(ValueError, match="leaves"):
            await sandbox.instance_put(tmp_path / "one.txt", "../etc")


async def test_shutdown_leaves_no_container(engine: DockerEngine) -> None:
    """After the environment shuts down, no container of ours is left, running or not."""
    async with environment(engine, min_ready=2):
        assert len(await labelled(engine.instance_id)) == 2
    assert await labelled(engine.instance_id) == []


async def test_missing_image_is_a_config_error_at_once(engine: DockerEngine) -> None:
    """A missing image is the config's fault: the start fails at once, nothing is left."""
    with pytest.raises(SandboxConfigError, match="never pulls"):
        async with environment(engine, docker={"image": "supervisor-test/absent:none"}):
            pass
    assert await labelled(engine.instance_id) == []


async def test_a_command_that_exits_is_a_config_error(engine: DockerEngine) -> None:
    """A container whose command exits at once cannot be a sandbox: a config error."""
    with pytest.raises(SandboxConfigError, match="keep running"):
        async with environment(engine, docker={"image": IMAGE, "command": ["true"]}):
            pass
    assert await labelled(engine.instance_id) == []


class _Response:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.reason = "test"
        self.url = "http://docker/create"


@pytest.mark.parametrize(
    ("failure", "kind"),
    [
        (docker.errors.ImageNotFound("no such image", _Response(404)), SandboxConfigError),
        (docker.errors.NotFound("network x not found", _Response(404)), SandboxConfigError),
        (docker.errors.APIError("bad memory", _Response(400)), SandboxConfigError),
        (docker.errors.InvalidArgument("checked by the SDK"), SandboxConfigError),
        (docker.errors.APIError("name in use", _Response(409)), SandboxStateError),
        (docker.errors.APIError("shim failed", _Response(500)), SandboxStateError),
        (requests.ConnectionError("refused"), SandboxStateError),
    ],
)
def test_run_failures_split_into_config_and_state_errors(
    failure: Exception, kind: type[Exception]
) -> None:
    """A request the engine rejects is the config's; an engine that fails is the sandbox's."""
    with pytest.raises(StartError) as caught:
        try:
            with docker_errors("create container"):
                raise failure
        except DockerError as exc:
            raise StartError(str(exc)) from exc  # as DockerEngine.run does
    error = classify(caught.value, "sandbox env/0:0")
    assert type(error) is kind
