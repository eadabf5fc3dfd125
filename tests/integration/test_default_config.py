"""`make run`: the embedded default config, as shipped, and the example configs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from supervisor.config.paths import DEFAULT_CONFIG
from supervisor.launchers.deephaven.server import python_launch_problem
from tests.integration.conftest import run_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "config" / "examples").glob("*.toml"))

States = dict[str, tuple[str, str]]


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


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_config_is_valid(example: Path) -> None:
    """What the README points people to passes `supervisor check`."""
    done = run_cli("check", "-c", str(example))
    assert done.returncode == 0, done.stderr
    assert EXAMPLES, "config/examples/ is empty"


def fresh_env(tmp_path: Path) -> dict[str, str]:
    """This environment without a config or socket of the host's, with private dirs."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("SUPERVISOR_CONFIG", "SUPERVISOR_SOCKET")
    }
    env |= {"RUNTIME_DIRECTORY": str(tmp_path / "run"), "STATE_DIRECTORY": str(tmp_path / "state")}
    env["SUPERVISOR_SOCKET"] = str(tmp_path / "run" / "control.sock")
    return env


@asynccontextmanager
async def running_daemon(argv: list[str], env: dict[str, str]) -> AsyncIterator[trio.Process]:
    """`supervisor run ...` in the foreground; it must stop cleanly on SIGTERM."""
    proc = await trio.lowlevel.open_process(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield proc
        proc.terminate()
        with trio.fail_after(60):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_for_states(
    env: dict[str, str], done: Callable[[States], bool], *, within: float
) -> States:
    """Poll `supervisor status --json` (another process's state, as an operator would)."""

    def status() -> States:
        ran = run_cli("status", "--json", env=env)
        if ran.returncode != 0:
            return {}
        current = json.loads(ran.stdout)
        return {r["name"]: (r["state"], r["liveness"]) for r in current.get("resources", [])}

    with trio.fail_after(within):
        while True:
            states = await trio.to_thread.run_sync(status)
            if done(states):
                return states
            await trio.sleep(0.5)


async def test_the_embedded_default_config_runs_everything_it_names(tmp_path: Path) -> None:
    """No -c, no $SUPERVISOR_CONFIG: web and heartbeat come up, and nothing else (no
    Deephaven, no Docker), the scratch pool hands out a session, and SIGTERM stops it all."""
    assert not DEFAULT_CONFIG.exists(), "this machine has a config in /etc: not a fresh one"
    env = fresh_env(tmp_path)
    async with running_daemon([sys.executable, "-m", "supervisor", "run"], env):
        states = await wait_for_states(
            env, lambda s: s.get("heartbeat", ("",))[0] == "RUNNING", within=60
        )
        assert states == {"web": ("RUNNING", "ONLINE"), "heartbeat": ("RUNNING", "ONLINE")}
        sid = (
            await trio.to_thread.run_sync(lambda: run_cli("session", "acquire", "scratch", env=env))
        ).stdout.strip()
        ran = await trio.to_thread.run_sync(
            lambda: run_cli("session", "exec", sid, "--", "sh", "-c", "echo hello", env=env)
        )
        assert ran.stdout == "hello\n"


async def test_the_deephaven_example_launches_a_server_with_generated_credentials(
    tmp_path: Path,
) -> None:
    """config/examples/deephaven.toml: the server comes up ONLINE and its PSK is served."""
    env = fresh_env(tmp_path)
    argv = [
        sys.executable,
        "-m",
        "supervisor",
        "run",
        "-c",
        str(REPO / "config/examples/deephaven.toml"),
    ]
    async with running_daemon(argv, env):
        await wait_for_states(
            env, lambda s: s.get("deephaven") == ("RUNNING", "ONLINE"), within=120
        )
        creds = await trio.to_thread.run_sync(lambda: run_cli("credentials", "deephaven", env=env))
        assert len(json.loads(creds.stdout)["token"]) == 32
