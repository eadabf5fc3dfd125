"""A command in a sandbox as `run_captured` sees it: its answers, its failures' messages."""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import trio

from supervisor.launchers.isolation.commands import KILLED, SandboxProcess, spawn_error


class Channel:
    """The agent's socket, as a list of what was sent; answers are handed in by the test."""

    def __init__(self) -> None:
        self.sent: list[Mapping[str, Any]] = []
        self.aborted: list[str] = []

    def send_nowait(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        self.sent.append(message)

    async def until(self, event: trio.Event) -> None:
        await event.wait()

    async def abort(self, reason: str) -> None:
        self.aborted.append(reason)


@pytest.mark.parametrize(
    ("errno", "filename", "expected"),
    [
        (2, "nope", "command not found: 'nope'"),
        (13, "./x", "permission denied executing './x'"),
        (11, "sh", "cannot run 'sh': the sandbox is at its process limit"),
        (0, None, "cannot execute: embedded null byte"),
    ],
)
def test_a_failed_spawn_reads_like_a_host_ones(
    errno: int, filename: str | None, expected: str
) -> None:
    """The agent's errno becomes the message the launcher would give for a host child."""
    error = "embedded null byte" if errno == 0 else "whatever"
    assert spawn_error({"errno": errno, "filename": filename, "error": error}) == expected


async def test_exit_status_and_kill_go_through_the_channel() -> None:
    """`exited` carries the Popen returncode; a kill is a request naming the command."""
    channel = Channel()
    process = SandboxProcess(channel, 7, (-1, -1))
    process.answer({"op": "started", "id": 7})
    assert process.answered.is_set()
    process.kill()
    assert channel.sent == [{"op": "signal", "id": 7, "sig": signal.SIGKILL}]
    process.answer({"op": "exited", "id": 7, "status": -9})
    term = await process.wait()
    assert term.signal == signal.SIGKILL
    process.kill()  # already gone: nothing more is sent
    assert len(channel.sent) == 1


async def test_an_unconfirmed_kill_aborts_the_sandbox(autojump_clock: trio.abc.Clock) -> None:
    """A kill the agent never confirms costs the sandbox, after KILL_GRACE, not a hang."""
    channel = Channel()
    process = SandboxProcess(channel, 1, (-1, -1))

    async def abort(reason: str) -> None:
        channel.aborted.append(reason)
        process.finish(KILLED)

    channel.abort = abort  # type: ignore[method-assign]
    process.kill()
    started = trio.current_time()
    await process.wait()
    assert trio.current_time() - started == 5.0
    assert channel.aborted == ["the agent did not confirm a kill"]
