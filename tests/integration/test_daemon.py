"""The daemon as operators run it: `supervisor run` and `supervisor check` as real processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.integration.conftest import alive, children_of, process_gone, run_cli

CONFIG = """
[daemon]
log_format = "json"
shutdown_timeout = "10s"
[resources.a]
kind = "process"
command = ["sleep", "1000"]
[resources.b]
kind = "process"
command = ["sh", "-c", "sleep 1000 & echo $! > TMP/b.pid; wait"]
startup = { exec = ["test", "-s", "TMP/b.pid"], interval = "10ms" }  # the grandchild exists
depends_on = ["a"]
[resources.c]
kind = "process"
command = ["sleep", "1000"]
"""


class Daemon:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, object]] = []
        self._buffer = b""

    async def until_log(self, event: str, timeout: float = 20.0) -> dict[str, object]:
        """Read the daemon's JSON log until `event` appears (bounded)."""
        assert self.proc.stderr is not None
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if line.get("event") == event:
                        return line
                chunk = await self.proc.stderr.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"daemon exited before logging {event!r}")
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines += [json.loads(line) for line in complete if line.strip()]


@asynccontextmanager
async def daemon(
    tmp_path: Path, config: str = CONFIG, env: dict[str, str] | None = None
) -> AsyncIterator[Daemon]:
    path = tmp_path / "supervisor.toml"
    # Never the machine's default socket or port: tests run beside other daemons.
    private = f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
    path.write_text(config.replace("[daemon]\n", private, 1).replace("TMP/", f"{tmp_path}/"))
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "supervisor", "run", "-c", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        yield Daemon(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        with trio.fail_after(10):
            await proc.wait()
        assert proc.stderr is not None
        await proc.stderr.aclose()


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.add(child)
            todo.append(child)
    return found


async def test_sigterm_stops_everything_and_exits_0(tmp_path: Path) -> None:
    """SIGTERM: every resource is stopped in order, nothing survives, exit status 0."""
    async with daemon(tmp_path) as d:
        ready = await d.until_log("daemon_ready")
        assert ready["summary"] == "3 running, 0 fatal"
        kids = descendants(d.proc.pid)
        assert len(kids) == 4  # three resources, one with a grandchild
        d.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await d.proc.wait() == 0
        await d.until_log("daemon_stopped")
        for pid in kids:
            await process_gone(pid)
        stops = [
            (e["resource"], e["to"])
            for e in d.lines
            if e.get("event") == "state_changed" and e["to"] in ("STOPPING", "STOPPED")
        ]
        assert stops.index(("b", "STOPPED")) < stops.index(("a", "STOPPING"))


async def test_no_child_survives_a_sigkilled_daemon(tmp_path: Path) -> None:
    """kill -9 of the daemon takes every process it started with it, grandchildren too."""
    async with daemon(tmp_path) as d:
        await d.until_log("daemon_ready")
        everything = descendants(d.proc.pid)
        assert len(everything) == 4  # three resources, one with a grandchild
        (guardian,) = children_of(d.proc.pid, guardian=True) - everything
        d.proc.kill()
        await d.proc.wait()
        for pid in everything:
            await process_gone(pid)
            assert not alive(pid)
        await process_gone(guardian)  # its work done, the guardian exits too


async def test_second_sigint_forces_a_fast_stop(tmp_path: Path) -> None:
    """The first SIGINT stops gracefully; a second one kills what is still stopping."""
    config = """
    [daemon]
    log_format = "json"
    shutdown_timeout = "60s"
    [resources.stubborn]
    kind = "process"
    command = ["python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('armed', flush=True); time.sleep(1000)"]
    stop_timeout = "60s"
    log_output = true            # its "armed" line in the daemon log says the handler is set
    """
    async with daemon(tmp_path, config) as d:
        await d.until_log("output")  # the handler is installed
        (child,) = children_of(d.proc.pid)
        d.proc.send_signal(signal.SIGINT)
        await d.until_log("daemon_stopping")
        began = trio.current_time()
        d.proc.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await d.proc.wait() == 0
        assert trio.current_time() - began < 30  # far below stop_timeout: it was forced
        await d.until_log("daemon_stop_forced")
        await process_gone(child)


def test_invalid_config_refuses_to_start(tmp_path: Path) -> None:
    """`run` with a broken file prints the problems with key paths and exits 1."""
    path = tmp_path / "bad.toml"
    path.write_text('[resources.x]\nkind = "process"\ncommand = "sleep 1"\n')
    result = run_cli("run", "-c", str(path))
    assert result.returncode == 1
    assert "resources.x.command: must be a list of strings" in result.stderr


def test_check_prints_problems_or_a_summary(tmp_path: Path) -> None:
    """`check` exits 1 listing every problem, or 0 with a summary."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nlog_level = 'loud'\n[resources.x]\nkind = 'process'\n")
    result = run_cli("check", "-c", str(bad))
    assert result.returncode == 1
    assert "2 problem(s)" in result.stderr
    assert "daemon.log_level" in result.stderr
    assert "resources.x.command: required key is missing" in result.stderr
    good = tmp_path / "good.toml"
    good.write_text(CONFIG)
    result = run_cli("check", "-c", str(good))
    assert result.returncode == 0
    assert "resources (3): a, b, c" in result.stdout


def test_help_describes_every_command() -> None:
    """--help of the program and of each subcommand is complete."""
    env = {**os.environ, "COLUMNS": "120"}
    top = run_cli("--help", env=env)
    assert top.returncode == 0
    assert "run" in top.stdout
    assert "check" in top.stdout
    for command in (
        "run",
        "check",
        "status",
        "start",
        "stop",
        "restart",
        "reload",
        "events",
        "signal",
        "pid",
    ):
        sub = run_cli(command, "--help", env=env)
        assert sub.returncode == 0
        assert "--config" in sub.stdout


async def test_sigusr1_logs_every_resource(tmp_path: Path) -> None:
    """SIGUSR1 writes one resource_status event per resource, with state and pid."""
    async with daemon(tmp_path) as d:
        await d.until_log("daemon_ready")
        d.proc.send_signal(signal.SIGUSR1)
        await d.until_log("resource_status")
        d.proc.send_signal(signal.SIGTERM)
        await d.until_log("daemon_stopped")
    statuses = {e["resource"]: e for e in d.lines if e.get("event") == "resource_status"}
    assert set(statuses) == {"a", "b", "c"}
    assert all(s["state"] == "RUNNING" and isinstance(s["pid"], int) for s in statuses.values())
