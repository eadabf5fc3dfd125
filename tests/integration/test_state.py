"""The state directory: one daemon each, records of what it launched, recovery after a crash."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest
import structlog
import trio

from supervisor.errors import StateDirError
from supervisor.launchers.local import open_local_launcher
from supervisor.runtime.state_dir import StateDir, process_start_time
from tests.integration.conftest import alive, children_of, is_guardian, process_gone, run_cli
from tests.integration.test_daemon import daemon


def test_one_daemon_per_state_dir(tmp_path: Path) -> None:
    """A second lock on the same directory fails, naming the holder."""
    first = StateDir(tmp_path / "state")
    first.open()
    try:
        with pytest.raises(
            StateDirError,
            match=rf"another daemon \(pid {os.getpid()}\) is using this state directory",
        ):
            StateDir(tmp_path / "state").open()
        instance = first.instance_id
    finally:
        first.close()
    again = StateDir(tmp_path / "state")
    again.open()
    assert again.instance_id == instance  # created once, kept across runs
    again.close()


async def test_launched_processes_are_recorded_until_reaped(tmp_path: Path) -> None:
    """A record (pid, start time, resource) exists exactly while the process does."""
    state = StateDir(tmp_path / "state")
    state.open()
    async with open_local_launcher(state) as launcher:
        handle = await launcher.spawn(["sleep", "1000"], record_as="web")
        record = json.loads((state.procs / f"{handle.pid}.json").read_text())
        assert record == {
            "pid": handle.pid,
            "start_time": process_start_time(handle.pid),
            "resource": "web",
        }
        await handle.stop(1.0)
        assert not (state.procs / f"{handle.pid}.json").exists()
        probe = await launcher.spawn(["true"])  # not a resource: not recorded
        await probe.wait()
        assert list(state.procs.iterdir()) == []
    state.close()


async def test_an_unwritable_state_dir_is_reported_once_and_supervision_goes_on(
    tmp_path: Path,
) -> None:
    """Records that cannot be written are reported, and processes still start."""
    state = StateDir(tmp_path / "state")
    state.open()
    shutil.rmtree(state.procs)
    state.procs.write_text("not a directory")  # every record write now fails
    with structlog.testing.capture_logs() as logs:
        async with open_local_launcher(state) as launcher:
            first = await launcher.spawn(["sleep", "1000"], record_as="a")
            second = await launcher.spawn(["sleep", "1000"], record_as="b")
            assert alive(first.pid)
            assert alive(second.pid)
    state.close()
    assert [entry["event"] for entry in logs].count("state_dir_unwritable") == 1
    assert not list(tmp_path.glob("state/.*.tmp"))  # nothing half-written left behind


def test_a_state_dir_in_use_stops_a_second_daemon(tmp_path: Path) -> None:
    """`supervisor run` on a state dir another daemon holds exits 1 and says why."""
    holder = StateDir(tmp_path / "state")
    holder.open()
    try:
        config = tmp_path / "s.toml"
        config.write_text(
            f'[daemon]\ncontrol_socket = "{tmp_path}/c.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
        )
        result = run_cli("run", "-c", str(config))
        assert result.returncode == 1
        assert "another daemon" in result.stderr
        assert not (tmp_path / "c.sock").exists()
    finally:
        holder.close()


async def test_orphans_of_a_daemon_that_died_with_its_guardian_are_reaped(tmp_path: Path) -> None:
    """If the daemon and its guardian both die, the next start stops what they left."""
    async with daemon(tmp_path) as first:
        await first.until_log("daemon_ready")
        kids = children_of(first.proc.pid)
        (guardian,) = children_of(first.proc.pid, guardian=True) - kids
        assert is_guardian(guardian)
        first.proc.send_signal(signal.SIGSTOP)  # so that it cannot start a new guardian
        os.kill(guardian, signal.SIGKILL)
        await process_gone(guardian)
        first.proc.kill()
        await first.proc.wait()
    for pid in kids:
        assert alive(pid)  # nobody left to kill them...
    async with daemon(tmp_path) as second:  # ...until the next start of the same state dir
        ready = await second.until_log("state_dir_ready")
        assert ready["orphans_reaped"] == 3
        await second.until_log("daemon_ready")
        for pid in kids:
            await process_gone(pid)
        reaped = {e["resource"] for e in second.lines if e.get("event") == "orphan_reaped"}
        assert reaped == {"a", "b", "c"}
        second.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            assert await second.proc.wait() == 0
