"""Cancelled MCP tool calls leave nothing behind: the real SDK client cancels a call
(`notifications/cancelled`) to `supervisor mcp`, which talks to a real daemon."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from supervisor.runtime.daemon import Daemon
from tests.integration.test_mcp_stdio import active, agent, call
from tests.integration.test_sandbox_api import daemon_with, env_config, until

pytestmark = pytest.mark.slow


def ended_sessions(daemon: Daemon) -> list[str]:
    """The reasons of the session ends the daemon has reported, oldest first."""
    kept, _ = daemon.bus.replay(0)
    return [e.reason for e in kept if e.subject == "session" and e.to_state == "ended"]


async def test_a_cancelled_acquire_releases_the_session_it_was_granted(tmp_path: Path) -> None:
    """An acquire cancelled while it waits for a sandbox releases the session the daemon
    grants it later, long before its lease would end it."""
    config = env_config(min_ready=1, max_size=1, lease="600s")
    async with daemon_with(tmp_path, config) as daemon, agent(tmp_path) as client:
        first = (await call(client, "sandbox_acquire", environment="box"))["session_id"]
        async with trio.open_nursery() as nursery:
            waiting = trio.CancelScope()

            async def second() -> None:
                with waiting:
                    await client.call_tool(
                        "sandbox_acquire", {"environment": "box", "wait_seconds": 60}
                    )

            nursery.start_soon(second)
            # Each read is a round trip to the daemon (bounded): the second acquire waits.
            with trio.fail_after(15):
                while (await call(client, "sandbox_environments"))["environments"][0][
                    "waiters"
                ] != 1:
                    pass
            waiting.cancel()
        await call(client, "sandbox_release", session_id=first)
        # The sandbox goes to the cancelled acquire, which hands it straight back.
        await until(daemon, lambda: len(ended_sessions(daemon)) == 2, timeout=15)
        assert ended_sessions(daemon) == ["released", "released"]
        assert active(daemon) == 0


def _pid_of(argv: bytes) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if Path(f"/proc/{entry}/cmdline").read_bytes() == argv:
                    return int(entry)
            except OSError:
                continue
    return None


async def test_a_cancelled_exec_kills_its_command_at_once(tmp_path: Path) -> None:
    """A quiet command whose exec is cancelled dies promptly (not at its next output or
    its end), and the session carries on."""
    async with daemon_with(tmp_path, env_config()) as daemon, agent(tmp_path) as client:
        sid = (await call(client, "sandbox_acquire", environment="box"))["session_id"]
        began = trio.Event()

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            began.set()

        async with trio.open_nursery() as nursery:
            running = trio.CancelScope()

            async def run() -> None:
                with running:
                    await client.call_tool(
                        "sandbox_exec",
                        {"session_id": sid, "script": "echo go; exec sleep 617"},
                        progress_callback=on_progress,
                    )

            nursery.start_soon(run)
            with trio.fail_after(15):
                await began.wait()
            pid = _pid_of(b"sleep\x00617\x00")
            assert pid is not None
            pidfd = os.pidfd_open(pid)
            try:
                running.cancel()
                with trio.fail_after(10):
                    await trio.lowlevel.wait_readable(pidfd)  # readable once it has exited
            finally:
                os.close(pidfd)
        ran = await call(client, "sandbox_exec", session_id=sid, command=["echo", "still here"])
        assert (ran["exit_code"], ran["stdout"]) == (0, "still here\n")
        assert active(daemon) == 1
