"""Faults from outside: a killed daemon, killed and frozen children, abusive clients, a full disk."""

from __future__ import annotations

import contextlib
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
from tests.integration.conftest import alive, free_port, process_gone
from tests.integration.test_api import running, unix
from tests.integration.test_daemon import daemon, descendants


async def test_a_frozen_process_is_restarted_by_its_health_check(tmp_path: Path) -> None:
    """A SIGSTOPped server stops answering: `failures` timed-out checks restart it."""
    port = free_port()
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


async def test_a_thousand_slow_clients_are_capped_and_cut_off(tmp_path: Path) -> None:
    """1,000 connections that never finish their request head: past the listener's cap a
    new connection gets a prompt 503 (not a hang), a connection opened before keeps
    working, supervision is not slowed, and the slow ones are cut off at the header
    timeout, after which new connections are served again."""
    resources = '[resources.s]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
    limits = 'limits = { connections = 512, streams = 128, header_timeout = "2s" }\n'
    async with running(tmp_path, resources, daemon_extra=limits) as daemon, unix(daemon) as client:
        assert daemon.api is not None
        assert daemon.api.socket_path is not None
        assert (await client.get("/healthz")).status_code == 200  # opens its connection
        slow = []
        try:
            for _ in range(1000):
                stream = await trio.open_unix_socket(str(daemon.api.socket_path))
                slow.append(stream)
                with contextlib.suppress(trio.BrokenResourceError):  # refused past the cap
                    await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: d\r\n")  # never ends
            with trio.fail_after(5):
                assert (await client.get("/healthz")).status_code == 200  # kept alive
            answer = b""
            with trio.fail_after(10):  # refusals of the flood itself may still be lingering
                while not answer:
                    fresh = await trio.open_unix_socket(str(daemon.api.socket_path))
                    with contextlib.suppress(trio.BrokenResourceError):
                        await fresh.send_all(b"GET /healthz HTTP/1.1\r\nHost: d\r\n\r\n")
                        answer = await fresh.receive_some(4096)
                    await fresh.aclose()
            assert answer.startswith(b"HTTP/1.1 503"), answer
            assert b"too_many_connections" in answer
            sup = daemon.supervisors["s"]
            pid = sup.snapshot().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with trio.fail_after(5):
                await sup.wait_for(lambda s: s.state is State.RUNNING and s.restarts == 1)
            # The header timeout closes every slow connection the daemon accepted.
            accepted = slow[:512]
            with trio.fail_after(30):
                for stream in accepted:
                    with contextlib.suppress(trio.BrokenResourceError):
                        while await stream.receive_some(4096):
                            pass
            with trio.fail_after(10):
                async with unix(daemon) as again:
                    assert (await again.get("/healthz")).status_code == 200
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


def twenty_trees(pids: Path) -> str:
    """20 resources, each a shell with a grandchild; RUNNING once the grandchild exists."""
    return "".join(
        f'[resources.p{i:02}]\nkind = "process"\n'
        f'command = ["sh", "-c", "sleep 1000 & echo $! > {pids}/p{i:02}; wait"]\n'
        f'startup = {{ exec = ["test", "-s", "{pids}/p{i:02}"], interval = "20ms" }}\n'
        for i in range(20)
    )


async def test_sigkill_the_daemon_repeatedly_and_nothing_leaks(tmp_path: Path) -> None:
    """SIGKILL a daemon running 20 process trees, three times: each restart finds nothing
    left of the previous run and brings all 20 back."""
    pids = tmp_path / "pids"
    pids.mkdir()
    config = '[daemon]\nlog_format = "json"\n' + twenty_trees(pids)
    previous: set[int] = set()
    for _ in range(3):
        for stale in pids.iterdir():
            stale.unlink()
        async with daemon(tmp_path, config) as d:
            await d.until_log("daemon_ready")
            for pid in previous:
                await process_gone(pid)  # the guardian took the last run's trees down
            current = descendants(d.proc.pid)
            assert len(current) == 40  # 20 shells and their 20 sleeps
            d.proc.kill()
            await d.proc.wait()
            previous = current
    for pid in previous:
        await process_gone(pid)


async def test_a_child_killed_again_and_again_keeps_coming_back(tmp_path: Path) -> None:
    """kill -9 ten times in a row: it comes back each time and nothing piles up."""
    resources = (
        '[resources.s]\nkind = "process"\ncommand = ["sh", "-c", "sleep 1000 & wait"]\n'
        'restart = { backoff = { initial = "10ms", max = "50ms" } }\n'
    )
    async with running(tmp_path, resources) as daemon_:
        sup = daemon_.supervisors["s"]
        for n in range(1, 11):
            with trio.fail_after(10):
                await sup.wait_for(lambda s, n=n: s.state is State.RUNNING and s.restarts == n - 1)
            pid = sup.snapshot().pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await process_gone(pid)
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.RUNNING and s.restarts == 10)
        assert daemon_._launcher is not None
        assert len(daemon_._launcher.children) == 1  # only the live one is tracked
