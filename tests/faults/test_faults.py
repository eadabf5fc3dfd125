"""Faults from outside: frozen children, abusive clients, a state directory that fills up."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import trio

from supervisor.supervision.states import State
from tests.integration.conftest import alive
from tests.integration.test_api import running, unix
from tests.integration.test_process_supervision import _free_port


async def test_a_frozen_process_is_restarted_by_its_health_check(tmp_path: Path) -> None:
    """A SIGSTOPped server stops answering: `failures` timed-out checks restart it."""
    port = _free_port()
    resources = f"""
[resources.web]
kind = "process"
command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
startup = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}
health = {{ http = "http://127.0.0.1:{port}/", interval = "100ms", timeout = "300ms", failures = 2 }}
stop_timeout = "1s"
"""
    async with running(tmp_path, resources) as daemon:
        sup = daemon.supervisors["web"]
        frozen = sup.snapshot().pid
        assert frozen is not None
        mark = daemon.bus.last_seq
        os.kill(frozen, signal.SIGSTOP)
        with trio.fail_after(15):
            await sup.wait_for(lambda s: s.state is State.RUNNING and s.snapshot().pid != frozen)
        backoff = next(e for e in daemon.bus.replay(mark)[0] if e.to_state == "BACKOFF")
        assert backoff.reason == "health_check"
        assert "timed out" in backoff.detail
        assert not alive(frozen)  # SIGKILL reaches a stopped process


async def test_the_api_stays_responsive_under_a_thousand_slow_clients(tmp_path: Path) -> None:
    """1,000 connections that never finish their request do not stall the API or supervision."""
    resources = '[resources.s]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
    async with running(tmp_path, resources) as daemon, unix(daemon) as client:
        assert daemon.api is not None
        assert daemon.api.socket_path is not None
        slow = []
        try:
            for _ in range(1000):
                stream = await trio.open_unix_socket(str(daemon.api.socket_path))
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: daemon\r\n")  # never ends
                slow.append(stream)
            with trio.fail_after(5):
                assert (await client.get("/healthz")).status_code == 200
            sup = daemon.supervisors["s"]
            pid = sup.snapshot().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with trio.fail_after(5):
                await sup.wait_for(lambda s: s.state is State.RUNNING and s.restarts == 1)
        finally:
            for stream in slow:
                await stream.aclose()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs (CI runs as root), unmounted afterwards."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-R", "-l", str(mount)], check=True)


def fill(directory: Path) -> None:
    """Write until the filesystem is full (ENOSPC)."""
    fd = os.open(directory / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


async def test_a_full_then_read_only_state_dir_does_not_stop_supervision(
    tmp_path: Path, small_tmpfs: Path
) -> None:
    """The state dir fills up, then turns read-only: restarts go on, errors are reported once,
    and no record is left half-written."""
    resources = '[resources.s]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
    config_dir = tmp_path / "cfg"
    config_dir.mkdir()
    with structlog.testing.capture_logs() as logs:
        async with running(config_dir, resources, state_dir=small_tmpfs / "state") as daemon:
            sup = daemon.supervisors["s"]
            fill(small_tmpfs)
            for restarts in (1, 2):
                pid = sup.snapshot().pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                with trio.fail_after(10):
                    await sup.wait_for(
                        lambda s, n=restarts: s.state is State.RUNNING and s.restarts == n
                    )
                if restarts == 1:  # now read-only too (a bind mount: the lock file stays open)
                    procs = str(small_tmpfs / "state" / "processes")
                    await trio.run_process(["mount", "--bind", procs, procs])
                    await trio.run_process(["mount", "-o", "remount,bind,ro", procs])
    assert [e["event"] for e in logs].count("state_dir_unwritable") == 1
    records = list((small_tmpfs / "state" / "processes").iterdir())
    for record in records:  # whatever is there is whole
        assert record.suffix == ".json"
        json.loads(record.read_text())
