"""`make run`: the embedded default config, as shipped, on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor.config.paths import DEFAULT_CONFIG
from supervisor.launchers.deephaven.server import python_launch_problem
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.slow


def test_without_java_the_deephaven_server_is_misconfigured_with_the_reason(tmp_path: Path) -> None:
    """No java on PATH and no JAVA_HOME: the reason names Java and what to do."""
    env = {"PATH": str(tmp_path)}
    saved = os.environ.copy()
    try:
        os.environ.pop("JAVA_HOME", None)
        os.environ["PATH"] = str(tmp_path)
        problem = python_launch_problem(sys.executable, env)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert problem is not None
    assert "Java 17" in problem


async def test_the_embedded_default_config_runs_everything(tmp_path: Path) -> None:
    """No -c, no $SUPERVISOR_CONFIG: web, heartbeat and a Deephaven server come up, the
    scratch pool hands out a session, and SIGTERM stops it all."""
    assert not DEFAULT_CONFIG.exists(), "this machine has a config in /etc: not a fresh one"
    env = {
        k: v for k, v in os.environ.items() if k not in ("SUPERVISOR_CONFIG", "SUPERVISOR_SOCKET")
    }
    env |= {"RUNTIME_DIRECTORY": str(tmp_path / "run"), "STATE_DIRECTORY": str(tmp_path / "state")}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "supervisor", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        env["SUPERVISOR_SOCKET"] = str(tmp_path / "run" / "control.sock")

        def status() -> dict[str, object]:
            done = run_cli("status", "--json", env=env)
            return json.loads(done.stdout) if done.returncode == 0 else {}

        with trio.fail_after(120):
            while True:  # another process's state: poll the CLI, as an operator would
                current = await trio.to_thread.run_sync(status)
                states = {
                    r["name"]: (r["state"], r["liveness"]) for r in current.get("resources", [])
                }  # type: ignore[union-attr]
                if (
                    states.get("deephaven") == ("RUNNING", "ONLINE")
                    and states.get("heartbeat", ("",))[0] == "RUNNING"
                ):
                    break
                await trio.sleep(0.5)
        assert states["web"] == ("RUNNING", "ONLINE")
        creds = await trio.to_thread.run_sync(lambda: run_cli("credentials", "deephaven", env=env))
        assert len(json.loads(creds.stdout)["token"]) == 32
        sid = (
            await trio.to_thread.run_sync(lambda: run_cli("session", "acquire", "scratch", env=env))
        ).stdout.strip()
        ran = await trio.to_thread.run_sync(
            lambda: run_cli("session", "exec", sid, "--", "sh", "-c", "echo hello", env=env)
        )
        assert ran.stdout == "hello\n"
        proc.terminate()
        with trio.fail_after(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
