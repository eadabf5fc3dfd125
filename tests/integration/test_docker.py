"""The Docker layer against a real engine: run, exec, events, stop, reconciliation, outages.

Every container a test creates carries the test's own instance id; the fixture removes
whatever still carries it, so a failing test leaks nothing into the shared engine.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from supervisor.config.container import ContainerConfig
from supervisor.config.types import RestartConfig
from supervisor.errors import StartError
from supervisor.launchers.docker import (
    INSTANCE_LABEL,
    RESOURCE_LABEL,
    ContainerSpec,
    DockerEngine,
    open_docker_engine,
)
from supervisor.resources.container import ContainerResource
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Settings
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor

IMAGE = "supervisor-test/systemd:bookworm"  # built by tests/provision.sh
SLEEPER = ["sleep", "infinity"]
DOCKER_SOCKET = "/var/run/docker.sock"


async def docker_cli(*args: str, check: bool = True) -> str:
    """Run the docker CLI (as an operator would, beside the daemon); return its stdout."""
    done = await trio.run_process(
        ["docker", *args], capture_stdout=True, capture_stderr=True, check=check
    )
    return done.stdout.decode().strip()


async def labelled(instance_id: str) -> list[str]:
    """Ids of every container, running or not, that carries `instance_id`."""
    out = await docker_cli(
        "ps", "-aq", "--no-trunc", "--filter", f"label={INSTANCE_LABEL}={instance_id}"
    )
    return out.split()


async def inspect(container_id: str) -> dict[str, object]:
    data: list[dict[str, object]] = json.loads(await docker_cli("inspect", container_id))
    return data[0]


async def remove_labelled(instance_id: str) -> None:
    """Remove every container of `instance_id`; return once none is left."""
    with trio.fail_after(30):
        while ids := await labelled(instance_id):
            await docker_cli("rm", "-f", *ids, check=False)  # may race a removal in progress


@pytest.fixture
async def instance_id() -> AsyncIterator[str]:
    iid = f"test-{uuid.uuid4().hex[:12]}"
    yield iid
    await remove_labelled(iid)


@pytest.fixture
async def engine(instance_id: str) -> AsyncIterator[DockerEngine]:
    async with open_docker_engine(None, instance_id) as engine:
        assert engine.engine_up
        yield engine


def sleeper(**fields: object) -> ContainerSpec:
    return ContainerSpec(IMAGE, "test", command=SLEEPER, network="none", **fields)  # type: ignore[arg-type]


async def test_run_labels_limits_and_loopback_only_ports(engine: DockerEngine) -> None:
    """A container carries our instance label, its limits, and publishes on 127.0.0.1 only."""
    started = trio.current_time()
    handle = await engine.run(
        ContainerSpec(
            IMAGE,
            "test",
            command=SLEEPER,
            labels={RESOURCE_LABEL: "web"},
            memory=64 << 20,
            cpus=0.5,
            pids_limit=64,
            read_only=True,
            tmpfs={"/tmp": "size=1m"},
            ports={"8080": 0},
        )
    )
    elapsed = trio.current_time() - started
    info = await inspect(handle.id)
    labels = info["Config"]["Labels"]  # type: ignore[index]
    host = info["HostConfig"]
    assert labels[INSTANCE_LABEL] == engine.instance_id
    assert labels[RESOURCE_LABEL] == "web"
    assert host["Init"] is True  # type: ignore[index]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (64 << 20, 5 * 10**8, 64)  # type: ignore[index]
    assert host["ReadonlyRootfs"] is True  # type: ignore[index]
    bindings = info["NetworkSettings"]["Ports"]["8080/tcp"]  # type: ignore[index]
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}
    assert handle.ports["8080/tcp"] == int(bindings[0]["HostPort"]) > 0
    assert handle.ident == handle.id[:12]
    assert handle.pid is None
    assert elapsed < 10, f"run took {elapsed:.3f}s"


async def test_exec_reports_exit_code_and_both_streams(engine: DockerEngine) -> None:
    """exec returns the exit code and stdout/stderr separately."""
    handle = await engine.run(sleeper())
    result = await engine.exec(
        handle.id, ["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=10, output_limit=1024
    )
    assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert not result.timed_out
    assert not result.truncated
    result = await engine.exec(
        handle.id, ["pwd"], timeout=10, output_limit=1024, workdir="/usr", env={"A": "1"}
    )
    assert (result.exit_code, result.stdout) == (0, b"/usr\n")


async def test_exec_timeout_kills_the_whole_process_group(engine: DockerEngine) -> None:
    """An exec past its timeout is SIGKILLed with its children, and reported as timed out."""
    handle = await engine.run(sleeper())
    result = await engine.exec(
        handle.id, ["sh", "-c", "sleep 300 & sleep 301"], timeout=1, output_limit=1024
    )
    assert result.timed_out
    assert 1.0 <= result.duration_s < 3.0
    survivors = await engine.exec(handle.id, ["ps", "-eo", "args"], timeout=10, output_limit=65536)
    assert b"sleep 30" not in survivors.stdout, survivors.stdout.decode()


async def test_exec_output_is_capped_per_stream(engine: DockerEngine) -> None:
    """Output past the limit is dropped (and read to the end), and says it was truncated."""
    handle = await engine.run(sleeper())
    result = await engine.exec(
        handle.id,
        ["sh", "-c", "head -c 1000000 /dev/zero; echo small >&2"],
        timeout=10,
        output_limit=1000,
    )
    assert result.exit_code == 0
    assert result.stdout == b"\0" * 1000
    assert result.stderr == b"small\n"
    assert result.truncated


async def test_docker_kill_reaches_the_waiter_through_the_event_stream(
    engine: DockerEngine,
) -> None:
    """A `docker kill` from outside ends `wait()` within moments, as a SIGKILL."""
    handle = await engine.run(sleeper())
    killed_at = time.monotonic()
    await docker_cli("kill", handle.id)
    with trio.fail_after(5):
        term = await handle.wait()
    latency = time.monotonic() - killed_at
    assert (term.reason, term.signal) == ("signal", 9)
    assert latency < 2.0, f"{latency:.3f}s from docker kill to wait()"


async def test_exit_code_comes_from_the_die_event(engine: DockerEngine) -> None:
    """A container that exits by itself reports its exit code."""
    handle = await engine.run(ContainerSpec(IMAGE, "test", command=["sh", "-c", "exit 7"]))
    with trio.fail_after(10):
        term = await handle.wait()
    assert (term.reason, term.exit_code) == ("exit_code", 7)


async def test_stop_ends_and_removes_the_container(engine: DockerEngine) -> None:
    """stop() sends the stop signal (init forwards it), then removes; twice is fine."""
    handle = await engine.run(sleeper())
    with trio.fail_after(10):
        term = await handle.stop(5.0)
    assert term.signal == 15
    assert await labelled(engine.instance_id) == []
    assert await handle.stop(5.0) == term
    handle.kill()  # after a stop: nothing left to do


async def test_kill_removes_in_the_background(engine: DockerEngine) -> None:
    """kill() returns at once; the removal it schedules happens without anyone awaiting it."""
    handle = await engine.run(sleeper())
    handle.kill()
    with trio.fail_after(10):
        await handle.wait()
        # Polled, bounded: the CLI has no way to await "no container left".
        while await labelled(engine.instance_id):  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_failed_starts_leave_no_container(engine: DockerEngine) -> None:
    """A missing image or a command that cannot run is a StartError, with nothing left over."""
    with pytest.raises(StartError, match="never pulls"):
        await engine.run(ContainerSpec("supervisor-test/no-such-image:1", "test"))
    with pytest.raises(StartError, match="no-such-command"):  # created, then start fails
        await engine.run(ContainerSpec(IMAGE, "test", command=["/no-such-command"], init=False))
    assert await labelled(engine.instance_id) == []


async def test_a_missing_command_under_init_is_exit_code_127(engine: DockerEngine) -> None:
    """Under init, the init process reports a missing command as exit code 127."""
    handle = await engine.run(ContainerSpec(IMAGE, "test", command=["/no-such-command"]))
    with trio.fail_after(10):
        term = await handle.wait()
    assert term.exit_code == 127


async def test_cancelled_starts_leave_no_container(engine: DockerEngine) -> None:
    """Cancelling run() at any point (create, start, inspect) removes what it made."""
    for delay in (0.0, 0.01, 0.03, 0.06, 0.1, 0.15):
        with trio.move_on_after(delay) as scope:
            handle = await engine.run(sleeper())
        if not scope.cancelled_caught:
            await handle.stop(0.0)
    assert await labelled(engine.instance_id) == []


async def test_reap_orphans_touches_only_our_instance(engine: DockerEngine) -> None:
    """Reconciliation removes our leftovers (minus those kept) and never another instance's."""
    other_id = f"test-{uuid.uuid4().hex[:12]}"
    try:
        async with open_docker_engine(None, other_id) as other:
            theirs = await other.run(sleeper())
        ours = await engine.run(sleeper(labels={RESOURCE_LABEL: "a"}))
        kept = await engine.run(sleeper(labels={RESOURCE_LABEL: "b"}))
        reaped = await engine.reap_orphans(keep=lambda c: c.resource == "b")
        assert [c.id for c in reaped] == [ours.id]
        assert await labelled(engine.instance_id) == [kept.id]
        assert await labelled(other_id) == [theirs.id]
    finally:
        await remove_labelled(other_id)


async def test_event_stream_reconnects_after_the_engine_drops_it(engine: DockerEngine) -> None:
    """When the stream ends, the engine reconnects and deaths are still delivered."""
    handle = await engine.run(sleeper())
    engine._stream.close()  # what the engine going away looks like to the reader
    with trio.fail_after(10):
        while engine.reconnects < 1:
            await engine.wait_engine(not engine.engine_up)
        await engine.wait_engine(True)
    await docker_cli("kill", handle.id)
    with trio.fail_after(5):
        term = await handle.wait()
    assert term.signal == 9


class UnixProxy:
    """A unix-socket proxy to the engine that a test can cut (an outage) and restore."""

    def __init__(self, path: Path, nursery: trio.Nursery) -> None:
        self.path = path
        self._nursery = nursery
        self._scope = trio.CancelScope()

    async def restore(self) -> None:
        self.path.unlink(missing_ok=True)
        sock = trio.socket.socket(trio.socket.AF_UNIX)
        await sock.bind(str(self.path))
        sock.listen()
        self._scope = trio.CancelScope()
        self._nursery.start_soon(self._serve, trio.SocketListener(sock), self._scope)

    def cut(self) -> None:
        """Drop every connection and refuse new ones."""
        self._scope.cancel()

    async def _serve(self, listener: trio.SocketListener, scope: trio.CancelScope) -> None:
        with scope:
            async with listener, trio.open_nursery() as handlers:
                await trio.serve_listeners(self._pipe, [listener], handler_nursery=handlers)

    async def _pipe(self, client: trio.SocketStream) -> None:
        engine = await trio.open_unix_socket(DOCKER_SOCKET)
        async with client, engine, trio.open_nursery() as nursery:

            async def copy(src: trio.SocketStream, dst: trio.SocketStream) -> None:
                async for chunk in src:
                    await dst.send_all(chunk)
                nursery.cancel_scope.cancel()

            nursery.start_soon(copy, client, engine)
            nursery.start_soon(copy, engine, client)


@asynccontextmanager
async def unix_proxy(path: Path) -> AsyncIterator[UnixProxy]:
    async with trio.open_nursery() as nursery:
        proxy = UnixProxy(path, nursery)
        await proxy.restore()
        yield proxy
        nursery.cancel_scope.cancel()


async def test_outage_is_not_a_death_and_a_death_during_it_is_not_lost(
    instance_id: str, tmp_path: Path
) -> None:
    """While the engine is unreachable handles keep waiting; a death in the gap arrives after."""
    async with (
        unix_proxy(tmp_path / "engine.sock") as proxy,
        open_docker_engine(f"unix://{proxy.path}", instance_id, timeout=5.0) as engine,
    ):
        assert engine.engine_up
        handle = await engine.run(sleeper())
        proxy.cut()
        with trio.fail_after(5):
            await engine.wait_engine(False)
        with pytest.raises(StartError):
            await engine.run(sleeper())
        await docker_cli("kill", handle.id)  # behind the daemon's back, during the outage
        with trio.move_on_after(0.5):
            await handle.wait()
            pytest.fail("an engine outage must not look like a death")
        await proxy.restore()
        with trio.fail_after(10):
            await engine.wait_engine(True)
            term = await handle.wait()
        assert term.signal == 9
        assert engine.reconnects == 1


async def test_engine_down_at_start_up_is_not_fatal(instance_id: str, tmp_path: Path) -> None:
    """An engine that does not answer yet opens as `engine_up = False`; starts fail cleanly."""
    async with open_docker_engine(f"unix://{tmp_path}/none.sock", instance_id) as engine:
        assert not engine.engine_up
        with pytest.raises(StartError, match="cannot reach"):
            await engine.run(sleeper())


def resource_config(**fields: object) -> ContainerConfig:
    return ContainerConfig.model_validate(
        {"kind": "container", "image": IMAGE, "command": SLEEPER, "network": "none", **fields}
    )


async def until(sup: ResourceSupervisor, predicate: Callable[[ResourceSupervisor], bool]) -> None:
    with trio.fail_after(20):
        await sup.wait_for(predicate)


async def test_supervisor_restarts_a_killed_container(engine: DockerEngine) -> None:
    """A container killed from outside is RUNNING again, as a new container, at once."""
    resource = ContainerResource("web", resource_config(), engine)
    settings = Settings(restart=RestartConfig(), start_timeout=30, stop_timeout=5)
    sup = ResourceSupervisor("web", resource, settings, bus=EventBus())
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        await until(sup, lambda s: s.state is State.RUNNING)
        first = sup.snapshot().ident
        assert first is not None
        killed_at = time.monotonic()
        await docker_cli("kill", first)
        await until(sup, lambda s: s.state is State.RUNNING and s.snapshot().ident != first)
        back_in = time.monotonic() - killed_at
        assert sup.restarts == 1
        assert back_in < 5.0, f"{back_in:.3f}s from docker kill to RUNNING again"
        second = sup.snapshot().ident
        assert second is not None
        with trio.fail_after(20):
            await sup.stop_and_wait()
        nursery.cancel_scope.cancel()
    assert await labelled(engine.instance_id) == []


async def test_startup_probe_gates_ready(engine: DockerEngine) -> None:
    """With a startup probe, ready() returns only once the probe passes inside the container."""
    config = resource_config(
        command=["sh", "-c", "sleep 0.5; touch /tmp/ready; exec sleep infinity"],
        startup={"exec": ["test", "-f", "/tmp/ready"], "interval": "100ms"},
        health={"exec": ["test", "-f", "/tmp/ready"]},
    )
    resource = ContainerResource("probe", config, engine)
    handle = await resource.start()
    with trio.fail_after(10):
        await resource.ready(handle)
    assert (await resource.check(handle)).ok
    await engine.exec(handle.id, ["rm", "/tmp/ready"], timeout=5, output_limit=0)  # type: ignore[attr-defined]
    assert not (await resource.check(handle)).ok
    await handle.stop(1.0)


async def test_adopt_takes_over_a_matching_container_and_replaces_a_stale_one(
    engine: DockerEngine,
) -> None:
    """adopt = true reuses our running container with the same settings, else replaces it."""
    first = await ContainerResource("svc", resource_config(adopt=True), engine).start()
    again = await ContainerResource("svc", resource_config(adopt=True), engine).start()
    assert again.ident == first.ident
    changed = ContainerResource("svc", resource_config(adopt=True, env={"V": "2"}), engine)
    replaced = await changed.start()
    assert replaced.ident != first.ident
    with trio.fail_after(5):
        await first.wait()  # the stale one was removed, and its watch says so
    ids = await labelled(engine.instance_id)
    assert [i[:12] for i in ids] == [replaced.ident]
