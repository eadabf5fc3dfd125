"""Liveness and credentials of connect-mode Deephaven resources, against real servers.

Each check is an authenticated call: on the session, or (lazy, before first use) a login
that keeps no session. A refused key is UNAUTHORIZED and FATAL at once, and credentials
are handed out only while they are known to work. The lazy tests share one external
server (`external`, as in test_deephaven.py); the key-change test runs its own twice.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
import trio

from supervisor.errors import NotRunningError
from supervisor.launchers.deephaven.launch import DeephavenCredentials
from supervisor.launchers.deephaven.output import Redactor, ServerOutput, wait_started
from supervisor.launchers.deephaven.server import ServerSpec, generate_psk, spawn_server
from supervisor.launchers.local import LocalLauncher, ProcessHandle, scrubbed_environment
from supervisor.supervision.states import Liveness, State
from tests.integration.conftest import free_port
from tests.integration.test_deephaven import (
    FAST_LIVENESS,
    SERVER_START,
    External,
    dh_config,
    external_server,
    states,
    supervised,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def external(tmp_path_factory: pytest.TempPathFactory) -> Iterator[External]:
    """One server for the lazy tests, accepting anonymous and PSK logins."""
    with external_server(tmp_path_factory.mktemp("dh")) as server:
        yield server


async def test_lazy_session_with_a_wrong_psk_goes_fatal_and_hands_out_nothing(
    external: External, launcher: LocalLauncher
) -> None:
    """lazy = true logs in at start: a refused key is UNAUTHORIZED and FATAL at once, never
    ONLINE, and no credentials are handed out."""
    config = dh_config(port=external.port, auth="psk", token="not-the-token", lazy=True)
    with structlog.testing.capture_logs() as logs:
        async with supervised(config, launcher) as (run, resource):
            fatal = await run.entered("dh", State.FATAL)
            assert states(run.of("dh")) == ["STARTING", "FATAL"]
            assert fatal.reason == "unauthorized"
            assert fatal.detail.startswith("UNAUTHORIZED [UNAUTHENTICATED]")
            assert run["dh"].liveness is Liveness.UNAUTHORIZED
            with pytest.raises(NotRunningError):
                resource.credentials()
    assert "not-the-token" not in repr(logs) + repr(run.events)


async def test_lazy_session_checks_by_logging_in_and_opens_its_session_on_first_use(
    external: External, launcher: LocalLauncher
) -> None:
    """Before first use each check is an authenticated login that keeps no session; the
    first script opens the session, whose own RPC is checked from then on."""
    config = dh_config(
        port=external.port, auth="psk", token=external.psk, lazy=True, liveness=FAST_LIVENESS
    )
    async with supervised(config, launcher) as (run, resource):
        await run.entered("dh", State.RUNNING)
        await run.until("dh", lambda s: s.checks >= 3)
        assert run["dh"].liveness is Liveness.ONLINE
        client = resource.client
        assert client is not None
        assert not client.connected
        assert DeephavenCredentials(**resource.credentials()).token == external.psk
        await resource.run_script("lazy_answer = 42", timeout=20)
        assert client.connected
        checks = run["dh"].checks
        await run.until("dh", lambda s: s.checks >= checks + 2)
        assert run["dh"].liveness is Liveness.ONLINE
        assert states(run.of("dh")) == ["STARTING", "RUNNING"]


async def test_lazy_session_without_its_server_hands_out_no_credentials(
    launcher: LocalLauncher,
) -> None:
    """Nothing listening: lazy still starts (no server needed), but credentials nobody
    has accepted are not handed out, and the first check says OFFLINE."""
    config = dh_config(port=free_port(), lazy=True, liveness=FAST_LIVENESS)
    async with supervised(config, launcher) as (run, resource):
        await run.entered("dh", State.RUNNING)
        with pytest.raises(NotRunningError, match=r"OFFLINE \[UNAVAILABLE\]"):
            resource.credentials()
        await run.until("dh", lambda s: s.liveness is Liveness.OFFLINE)


async def own_server(launcher: LocalLauncher, port: int, psk: str) -> ProcessHandle:
    """A PSK server on `port`, started the daemon's way; returns once it serves."""
    spec = ServerSpec(host="127.0.0.1", port=port, psk=psk, heap_mb=1024)
    watch = ServerOutput(Redactor([psk]), structlog.get_logger("test.server"))
    server = await spawn_server(launcher, spec, env=scrubbed_environment(), on_output=watch.line)
    with trio.fail_after(SERVER_START):
        await wait_started(watch, server)
    assert not server.exited.is_set(), watch.tail()
    return server


async def test_a_key_the_server_now_refuses_is_unauthorized_at_once(
    launcher: LocalLauncher,
) -> None:
    """The server comes back with another key: the check logs in again to tell a refused
    key from an expired session, and goes FATAL at once instead of restarting; meanwhile
    no credentials are handed out."""
    port, key = free_port(), generate_psk()
    # So many failures allowed that only the UNAUTHORIZED verdict can end the run.
    liveness = {"interval": "300ms", "timeout": "3s", "failures": 1000}
    config = dh_config(port=port, auth="psk", token=key, liveness=liveness)
    servers = [await own_server(launcher, port, key)]
    try:
        async with supervised(config, launcher) as (run, resource):
            await run.entered("dh", State.RUNNING)
            assert resource.credentials()["token"] == key
            servers[0].kill()
            await servers[0].wait()
            await run.until("dh", lambda s: s.liveness is Liveness.OFFLINE)
            with pytest.raises(NotRunningError, match="OFFLINE"):
                resource.credentials()
            servers.append(await own_server(launcher, port, generate_psk()))
            fatal = await run.entered("dh", State.FATAL, timeout=SERVER_START)
            assert states(run.of("dh")) == ["STARTING", "RUNNING", "STOPPING", "FATAL"]
            assert fatal.reason == "unauthorized"
            assert fatal.detail.startswith("UNAUTHORIZED [UNAUTHENTICATED]")
            with pytest.raises(NotRunningError):
                resource.credentials()
    finally:
        for server in servers:
            server.kill()
            await server.wait()
