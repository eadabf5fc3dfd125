"""Running a command to completion, its output captured and capped.

The process backend runs every sandbox command this way (on the host, or in an isolated
sandbox through its namespace), and so does a `command` feature scoped to the
environment (its hooks run on the host). Output beyond the limit is drained and
dropped, so a chatty command never blocks on its pipes; on timeout or cancellation the
whole process group is killed.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import trio

from supervisor.errors import StartError
from supervisor.sandbox.instance import ExecResult
from supervisor.supervision.policy import Termination


class Captured(Protocol):
    """A started command whose output the caller reads (a host child, or one in a sandbox)."""

    captured: tuple[int, int] | None
    exited: trio.Event

    async def wait(self) -> Termination: ...
    def signal_group(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class Spawner(Protocol):
    """What starts commands: the local launcher, or an isolated sandbox's namespace."""

    async def spawn(
        self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], capture: bool
    ) -> Captured: ...


_READ = 65536


async def run_captured(
    launcher: Spawner,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    output_limit: int,
) -> ExecResult:
    """Run `argv` to completion (or `timeout`), capturing at most `output_limit` bytes of
    each stream; the process group is killed on timeout or cancellation."""
    started = trio.current_time()
    try:
        handle = await launcher.spawn(argv, cwd=cwd, env=env, capture=True)
    except StartError as exc:
        return ExecResult(127, "", str(exc), trio.current_time() - started)
    assert handle.captured is not None
    buffers = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = False

    async def drain(fd: int, name: str) -> None:
        nonlocal truncated
        buf = buffers[name]
        async with trio.lowlevel.FdStream(fd) as stream:
            while chunk := await stream.receive_some(_READ):
                room = output_limit - len(buf)
                if len(chunk) > room:
                    truncated = True
                    chunk = chunk[: max(room, 0)]
                buf += chunk

    timed_out = False
    try:
        with trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, handle.captured[0], "stdout")
                nursery.start_soon(drain, handle.captured[1], "stderr")
                await handle.wait()
        if scope.cancelled_caught:
            timed_out = True
            handle.signal_group(signal.SIGKILL)
            await handle.wait()
    finally:
        if not handle.exited.is_set():
            handle.kill()
    term = await handle.wait()
    code = term.exit_code if term.exit_code is not None else -(term.signal or 0)
    return ExecResult(
        None if timed_out else code,
        buffers["stdout"].decode(errors="replace"),
        buffers["stderr"].decode(errors="replace"),
        trio.current_time() - started,
        timed_out=timed_out,
        truncated=truncated,
    )
