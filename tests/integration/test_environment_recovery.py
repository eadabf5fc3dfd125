"""Environments recover (supervisor/sandbox/keeper.py): a failed start is retried with the
restart policy, FATAL past the intensity limit, and an operator restart rebuilds the
environment now. Real process sandboxes, a real daemon in this process, its real API."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor.launchers.isolation import bubblewrap
from supervisor.runtime.daemon import Daemon
from tests.integration.conftest import run_cli
from tests.integration.test_api import unix
from tests.integration.test_sandbox_api import acquire, daemon_with, until

RESTART = (
    '[defaults.restart]\nbackoff = { initial = "200ms", max = "400ms" }\n'
    'intensity = { max_restarts = MAX, within = "1m" }\nfatal_retry = "1h"\n'
)
BOX = """
[environments.box]
min_ready = 1
max_size = 2
[[environments.box.features]]
kind = "command"
scope = "environment"
setup = ["test", "-f", "FLAG"]
"""


def config(tmp_path: Path, max_restarts: int = 100) -> str:
    return RESTART.replace("MAX", str(max_restarts)) + BOX.replace("FLAG", str(tmp_path / "flag"))


def status(daemon: Daemon) -> str:
    return str(daemon.sandbox_service.environment("box").stats()["status"])


async def test_a_failing_setup_is_retried_with_backoff_until_it_works(tmp_path: Path) -> None:
    """The environment's setup fails: BACKOFF, retried (failures counted, next delay shown)
    until the setup works, then ONLINE with the count cleared."""
    async with daemon_with(tmp_path, config(tmp_path)) as daemon, unix(daemon) as client:
        await until(daemon, lambda: daemon.sandbox_service.environment("box").failures >= 2)
        stats = (await client.get("/v1/environments/box")).json()
        assert stats["status"] == "BACKOFF"
        assert "FeatureCommandError" in stats["error"]
        assert stats["retry_in"] is not None
        assert (await acquire(client)).status_code == 503  # offline: retry later
        backoffs = [e for e in daemon.bus.replay(0)[0] if e.to_state == "BACKOFF"]
        assert backoffs[0].reason == "start_failed"
        assert backoffs[0].next_delay is not None
        (tmp_path / "flag").touch()
        await until(daemon, lambda: status(daemon) == "ONLINE", timeout=30)
        stats = (await client.get("/v1/environments/box")).json()
        assert (stats["failures"], stats["retry_in"], stats["error"]) == (0, None, None)
        assert (await acquire(client)).status_code == 201


async def test_past_the_intensity_limit_the_environment_is_fatal(tmp_path: Path) -> None:
    """More failed starts than the intensity limit allows: FATAL, retried after fatal_retry
    (an hour here), not hammered."""
    async with daemon_with(tmp_path, config(tmp_path, max_restarts=1)) as daemon:
        await until(daemon, lambda: status(daemon) == "FATAL")
        fatal = [e for e in daemon.bus.replay(0)[0] if e.to_state == "FATAL"]
        assert fatal[0].next_delay == 3600
        assert daemon.sandbox_service.environment("box").stats()["retry_in"] > 3000


async def test_an_operator_restart_rebuilds_the_environment_now(tmp_path: Path) -> None:
    """POST /v1/environments/box/restart: a FATAL environment is tried again at once; an
    ONLINE one is rebuilt, its sessions ended and its sandboxes replaced."""
    async with (
        daemon_with(tmp_path, config(tmp_path, max_restarts=1)) as daemon,
        unix(daemon) as client,
    ):
        await until(daemon, lambda: status(daemon) == "FATAL")
        (tmp_path / "flag").touch()
        answer = await client.post("/v1/environments/box/restart")
        assert answer.status_code == 202
        assert answer.json()["name"] == "box"
        await until(daemon, lambda: status(daemon) == "ONLINE")
        session = (await acquire(client)).json()
        first_env = daemon.sandbox_service.environments["box"]
        result = await trio.to_thread.run_sync(
            lambda: run_cli(
                "environment", "restart", "box", "--socket", str(tmp_path / "control.sock")
            )
        )
        assert result.returncode == 0, result.stderr
        assert "environment box: restarting" in result.stdout
        await until(
            daemon,
            lambda: (
                daemon.sandbox_service.environments.get("box") not in (None, first_env)
                and status(daemon) == "ONLINE"
            ),
        )
        assert (await client.get(f"/v1/sessions/{session['session_id']}")).status_code == 410
        again = (await acquire(client)).json()
        assert (
            again["sandbox_id"] != session["sandbox_id"]
            or again["session_id"] != session["session_id"]
        )
        assert (await client.post("/v1/environments/nope/restart")).status_code == 404


async def test_a_misconfigured_start_is_not_hammered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bwrap on the host: MISCONFIGURED at once with the install hint, next try only
    after fatal_retry (1h here), however fast the backoff would have been."""
    monkeypatch.setattr(bubblewrap.shutil, "which", lambda name: None)
    async with daemon_with(tmp_path, config(tmp_path)) as daemon, unix(daemon) as client:
        await until(daemon, lambda: status(daemon) == "MISCONFIGURED")
        stats = (await client.get("/v1/environments/box")).json()
        assert "apt-get install bubblewrap" in stats["error"]
        assert stats["failures"] == 1
        assert stats["retry_in"] > 3000
        (event,) = [e for e in daemon.bus.replay(0)[0] if e.to_state == "MISCONFIGURED"]
        assert event.reason == "misconfigured"
