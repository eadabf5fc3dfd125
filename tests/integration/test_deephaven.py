"""Deephaven resources against real servers from the `deephaven-server` package.

Connect-mode tests share one external server (module scope: starting a JVM takes seconds)
that accepts both anonymous and PSK logins. Launch-mode tests each run their own server,
since killing, freezing and restarting it is what they test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from supervisor.config.deephaven import PSK_HANDLER, DeephavenConfig
from supervisor.config.types import RestartConfig
from supervisor.errors import NotRunningError
from supervisor.launchers.deephaven.launch import DeephavenCredentials
from supervisor.launchers.deephaven.server import ServerSpec, generate_psk, pick_free_port
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.deephaven import DeephavenResource
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Settings
from supervisor.supervision.states import Liveness, State, Transition
from supervisor.supervision.supervisor import ResourceSupervisor
from tests.integration.conftest import DH_IMAGE, Running, alive, free_port, process_gone
from tests.integration.test_docker import docker_cli

pytestmark = pytest.mark.slow

BOTH_AUTH = (
    "-DAuthHandlers=io.deephaven.auth.AnonymousAuthenticationHandler,"
    "io.deephaven.authentication.psk.PskAuthenticationHandler"
)
SERVER_START = 60.0
FAST_LIVENESS = {"interval": "300ms", "timeout": "3s", "failures": 2}


@dataclass(frozen=True)
class External:
    port: int
    psk: str


@contextmanager
def external_server(tmp: Path) -> Iterator[External]:
    """A server not ours, accepting anonymous and PSK logins; its log goes to `tmp`."""
    psk = generate_psk()
    port = free_port()
    spec = ServerSpec(host="127.0.0.1", port=port, psk=psk, jvm_args=(BOTH_AUTH,))
    out = tmp / "server.log"
    with (
        out.open("wb") as sink,
        tempfile.TemporaryDirectory() as keys,
        socket.socket(socket.AF_UNIX) as listener,
    ):
        # The key goes as the daemon sends it (`spawn_server`): over a private socket.
        listener.bind(f"{keys}/key.sock")
        listener.listen(1)
        listener.settimeout(SERVER_START)
        server = subprocess.Popen(
            spec.argv(f"{keys}/key.sock"),
            env=spec.environment(os.environ),
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with listener.accept()[0] as conn:
            conn.sendall(psk.encode())
    try:
        deadline = time.monotonic() + SERVER_START
        # A sync fixture outside any trio run: polling its log file is the simple way.
        while b"Server started on port" not in out.read_bytes():
            assert server.poll() is None, out.read_text()[-2000:]
            assert time.monotonic() < deadline, "external server did not start"
            time.sleep(0.1)
        yield External(port, psk)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    """One server for the connect tests (module scope: starting a JVM takes seconds)."""
    with external_server(tmp_path_factory.mktemp("dh")) as server:
        yield server


def dh_config(**fields: Any) -> DeephavenConfig:
    return DeephavenConfig.model_validate({"kind": "deephaven", **fields})


@asynccontextmanager
async def supervised(
    config: DeephavenConfig,
    launcher: LocalLauncher,
    *,
    pick_port: Callable[[str], int] = pick_free_port,
    on_check: Callable[[str, float], None] | None = None,
    docker: DockerEngine | None = None,
) -> AsyncIterator[tuple[Running, DeephavenResource]]:
    """Run one Deephaven resource under a real `ResourceSupervisor`."""
    resource = DeephavenResource("dh", config, launcher, pick_port=pick_port, docker=docker)
    restart = RestartConfig().merged(config.restart)
    settings = Settings(restart, config.start_timeout, config.stop_timeout, config.autostart)
    bus = EventBus()
    sup = ResourceSupervisor("dh", resource, settings, bus=bus, on_check=on_check)
    running = Running({"dh": sup}, bus)
    bus.add_listener(running.events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        yield running, resource
        with trio.fail_after(30):
            await sup.stop_and_wait()
        nursery.cancel_scope.cancel()


def states(events: list[Transition]) -> list[str]:
    return [e.to_state for e in events]


# ----------------------------------------------------------------------------- connect


async def test_anonymous_session_comes_online_and_passes_liveness(
    external: External, launcher: LocalLauncher
) -> None:
    """An anonymous connect is RUNNING/ONLINE and its periodic RPC keeps succeeding."""
    durations: list[float] = []
    config = dh_config(port=external.port, liveness=FAST_LIVENESS)
    async with supervised(config, launcher, on_check=lambda _k, d: durations.append(d)) as (
        run,
        resource,
    ):
        await run.entered("dh", State.RUNNING)
        await run.until("dh", lambda s: s.checks >= 3)
        assert run["dh"].liveness is Liveness.ONLINE
        assert run["dh"].restarts == 0
        assert resource.client is not None
        status = await trio.Path(f"/proc/{resource.client.pid}/status").read_text()
        rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
        print(f"client helper {rss}")
    with pytest.raises(NotRunningError):  # stopped: nothing to hand out
        resource.credentials()
    print(f"liveness check latency: max {max(durations) * 1000:.1f} ms")


@pytest.mark.parametrize("source", ["token", "token_env", "token_file"])
async def test_psk_with_the_right_token_is_online(
    external: External,
    launcher: LocalLauncher,
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each token source works, and "psk" reaches the server as the handler's class name."""
    value: str = external.psk
    if source == "token_env":
        monkeypatch.setenv("DH_TEST_PSK", external.psk)
        value = "DH_TEST_PSK"
    elif source == "token_file":
        (tmp_path / "psk").write_text(external.psk + "\n")
        value = str(tmp_path / "psk")
    config = dh_config(port=external.port, auth="psk", **{source: value})
    async with supervised(config, launcher) as (run, resource):
        await run.entered("dh", State.RUNNING)
        creds = DeephavenCredentials(**resource.credentials())
        assert creds is not None
        assert (creds.auth_type, creds.token) == (PSK_HANDLER, external.psk)
        # The token reached the helper over its socket, and nothing else: not even the
        # variable it was read from is handed on.
        assert resource.client is not None
        for part in ("cmdline", "environ"):
            shown = await trio.Path(f"/proc/{resource.client.pid}/{part}").read_bytes()
            assert external.psk.encode() not in shown


async def test_wrong_psk_goes_fatal_without_a_hot_loop(
    external: External, launcher: LocalLauncher
) -> None:
    """A rejected token is FATAL after one attempt, and retried only after fatal_retry."""
    config = dh_config(port=external.port, auth="PSK", token="not-the-token")
    with structlog.testing.capture_logs() as logs:
        async with supervised(config, launcher) as (run, _):
            fatal = await run.entered("dh", State.FATAL)
            assert "UNAUTHENTICATED" in fatal.detail
            assert states(run.of("dh")) == ["STARTING", "FATAL"]
            assert (fatal.reason, fatal.next_delay) == (
                "unauthorized",
                RestartConfig().fatal_retry_after,
            )
            assert run["dh"].liveness is Liveness.UNAUTHORIZED
    assert "not-the-token" not in repr(logs) + repr(run.events)


async def test_refused_port_is_offline_then_backoff(launcher: LocalLauncher) -> None:
    """Nothing listening: the start fails fast as OFFLINE and backs off."""
    config = dh_config(port=free_port(), restart={"backoff": {"initial": "30s"}})
    async with supervised(config, launcher) as (run, _):
        # The first failure restarts at once; the second waits `initial` (30 s).
        backoff = await run.entered("dh", State.BACKOFF, count=2)
        assert backoff.next_delay is not None
        assert backoff.next_delay > 20
        assert backoff.reason == "start_failed"
        assert backoff.detail.startswith("OFFLINE [UNAVAILABLE]")
        assert run["dh"].liveness is Liveness.OFFLINE


async def test_dead_session_on_live_server_is_recreated_by_a_liveness_restart(
    external: External, launcher: LocalLauncher
) -> None:
    """A session the server forgot fails its checks and is replaced (reason `liveness`)."""
    config = dh_config(port=external.port, liveness=FAST_LIVENESS)
    async with supervised(config, launcher) as (run, resource):
        await run.entered("dh", State.RUNNING)
        assert resource.client is not None
        await resource.client.debug("drop_session")
        backoff = await run.entered("dh", State.BACKOFF)
        assert (backoff.reason, backoff.restart) == ("liveness", True)
        assert "session no longer valid" in backoff.detail
        await run.entered("dh", State.RUNNING, count=2)
        await run.until("dh", lambda s: s.checks >= 4 and s.liveness is Liveness.ONLINE)


@pytest.mark.parametrize("fault", ["abort", "use_after_close"])
async def test_a_client_crash_costs_only_that_session_a_restart(
    external: External, launcher: LocalLauncher, fault: str
) -> None:
    """The client library crashing (or misbehaving) restarts the session, never the daemon."""
    config = dh_config(port=external.port, liveness=FAST_LIVENESS)
    async with supervised(config, launcher) as (run, resource):
        await run.entered("dh", State.RUNNING)
        client = resource.client
        assert client is not None
        with pytest.raises(Exception):  # noqa: B017, PT011 - crash or error, both are fine
            await client.debug(fault)
        backoff = await run.entered("dh", State.BACKOFF)
        assert backoff.reason in ("signal", "exit_code")
        await run.entered("dh", State.RUNNING, count=2)
        await run.until("dh", lambda s: s.liveness is Liveness.ONLINE)
        assert not alive(client.pid)


# ------------------------------------------------------------------------------ launch


def launched(**fields: Any) -> DeephavenConfig:
    base: dict[str, Any] = {
        "launch": "python",
        "heap": "1g",
        "stop_timeout": "2s",
        "start_timeout": SERVER_START,
        "liveness": FAST_LIVENESS,
    }
    return dh_config(**{**base, **fields})


def open_session_with(resource: DeephavenResource) -> int:
    """Use the credentials the way a client would: a real pydeephaven session."""
    from pydeephaven import Session  # noqa: PLC0415 - only the tests load it in this process

    creds = DeephavenCredentials(**resource.credentials())
    assert creds is not None
    session = Session(creds.host, creds.port, auth_type=creds.auth_type, auth_token=creds.token)
    try:
        return int(session.empty_table(3).to_arrow().num_rows)
    finally:
        session.close()


async def test_launched_server_serves_a_session_and_survives_client_faults(
    launcher: LocalLauncher,
) -> None:
    """A launched server is RUNNING/ONLINE; a lost session or a crashed helper is
    recreated without restarting it; its credentials work; its PSK is never logged."""
    started = trio.current_time()
    with structlog.testing.capture_logs() as logs:
        async with supervised(launched(), launcher) as (run, resource):
            await run.entered("dh", State.RUNNING, timeout=SERVER_START)
            print(f"launch to ONLINE: {trio.current_time() - started:.2f}s")
            server_pid = run["dh"].snapshot().pid
            creds = DeephavenCredentials(**resource.credentials())
            assert creds is not None
            assert creds.auth_type == PSK_HANDLER
            assert len(creds.token) == 32
            rows = await trio.to_thread.run_sync(open_session_with, resource)
            assert rows == 3

            await resource.run_script("answer = 42", timeout=10)
            await resource.reset_scope(timeout=10)
            await resource.run_script("assert 'answer' not in globals()", timeout=10)

            def recreated() -> int:
                return sum(e["event"] == "deephaven_session_recreated" for e in logs)

            def more_than(count: int) -> Callable[[ResourceSupervisor], bool]:
                return lambda _sup: recreated() > count

            for fault in ("drop_session", "abort"):
                client = resource.client
                assert client is not None
                before = recreated()
                with pytest.raises(Exception) if fault == "abort" else nullcontext():  # noqa: PT011
                    await client.debug(fault)
                await run.until("dh", more_than(before))
                await run.until("dh", lambda s: s.liveness is Liveness.ONLINE)
            assert run["dh"].snapshot().pid == server_pid
            assert states(run.of("dh")) == ["STARTING", "RUNNING"]
    assert recreated() >= 2
    assert creds.token not in repr(logs) + repr(run.events)


async def test_kill_9_of_the_server_is_seen_at_once_and_restarted(
    launcher: LocalLauncher,
) -> None:
    """The server's death ends the handle immediately; a new server comes up ONLINE."""
    async with supervised(launched(), launcher) as (run, _):
        await run.entered("dh", State.RUNNING, timeout=SERVER_START)
        pid = run["dh"].snapshot().pid
        assert pid is not None
        killed_at = trio.current_time()
        os.kill(pid, signal.SIGKILL)
        backoff = await run.entered("dh", State.BACKOFF)
        print(f"kill -9 detected after {(trio.current_time() - killed_at) * 1000:.1f} ms")
        assert (backoff.reason, backoff.detail) == ("signal", "killed by SIGKILL")
        await run.entered("dh", State.RUNNING, count=2, timeout=SERVER_START)
        assert run["dh"].snapshot().pid not in (None, pid)
        assert run["dh"].liveness is Liveness.ONLINE


async def test_frozen_server_is_detected_within_the_liveness_timeout(
    launcher: LocalLauncher,
) -> None:
    """A SIGSTOPped server fails the liveness RPC by its deadline and is restarted."""
    liveness = {"interval": "500ms", "timeout": "2s", "failures": 1}
    async with supervised(launched(liveness=liveness), launcher) as (run, _):
        await run.entered("dh", State.RUNNING, timeout=SERVER_START)
        pid = run["dh"].snapshot().pid
        assert pid is not None
        frozen_at = trio.current_time()
        os.kill(pid, signal.SIGSTOP)
        stopping = await run.entered("dh", State.STOPPING)
        detected = trio.current_time() - frozen_at
        print(f"SIGSTOP detected after {detected:.2f}s")
        assert stopping.reason == "liveness"
        assert detected < 0.5 + 2.0 + 1.0
        await process_gone(pid)
        await run.entered("dh", State.RUNNING, count=2, timeout=SERVER_START)


async def test_auto_port_taken_before_the_server_binds_is_retried_on_another(
    launcher: LocalLauncher,
) -> None:
    """port = "auto": a bind failure is retried on a new port within the same start."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])

        def pick(host: str) -> int:
            return next(picks, None) or free_port()

        with structlog.testing.capture_logs() as logs:
            async with supervised(launched(), launcher, pick_port=pick) as (run, resource):
                await run.entered("dh", State.RUNNING, timeout=SERVER_START)
                creds = DeephavenCredentials(**resource.credentials())
                assert creds is not None
                assert creds.port != taken
                assert states(run.of("dh")) == ["STARTING", "RUNNING"]
    assert any(e["event"] == "deephaven_port_taken" and e["port"] == taken for e in logs)


# ------------------------------------------------------------------------------ docker


async def test_docker_launch_comes_online_and_docker_kill_restarts_it(
    launcher: LocalLauncher, dh_engine: DockerEngine
) -> None:
    """A server in a container is RUNNING/ONLINE on 127.0.0.1; `docker kill` restarts it."""
    config = launched(launch="docker", image=DH_IMAGE)
    started = trio.current_time()
    async with supervised(config, launcher, docker=dh_engine) as (run, resource):
        await run.entered("dh", State.RUNNING, timeout=SERVER_START)
        print(f"docker launch to ONLINE: {trio.current_time() - started:.2f}s")
        container = run["dh"].snapshot().ident
        assert container is not None
        creds = DeephavenCredentials(**resource.credentials())
        assert creds is not None
        assert creds.host == "127.0.0.1"
        assert await trio.to_thread.run_sync(open_session_with, resource) == 3

        killed_at = trio.current_time()
        await docker_cli("kill", container)
        backoff = await run.entered("dh", State.BACKOFF)
        print(f"docker kill detected after {(trio.current_time() - killed_at) * 1000:.1f} ms")
        assert backoff.reason in ("signal", "exit_code")
        await run.entered("dh", State.RUNNING, count=2, timeout=SERVER_START)
        assert run["dh"].snapshot().ident not in (None, container)
        assert run["dh"].liveness is Liveness.ONLINE
