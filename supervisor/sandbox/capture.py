"""Running a command to completion, its output captured and capped.

The process backend runs every sandbox command this way (on the host, or in an isolated
sandbox through its namespace), and so does a `command` feature scoped to the
environment (its hooks run on the host). Output beyond the limit is drained and
dropped, so a chatty command never blocks on its pipes; on timeout or cancellation the
whole process group is killed. Given an `output` sink, each piece of output (within the
limit) goes to it as it is read instead of into the result: that is a streamed exec, and
a client that goes away cancels it, which kills the group like a timeout. Input, when
given, is written to the command's stdin by a task beside the readers, then closed.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import trio

from supervisor.errors import StartError
from supervisor.sandbox.instance import ExecResult, OutputSink
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
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        capture: bool,
        stdin: int | None = None,
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
    stdin: bytes | None = None,
    output: OutputSink | None = None,
) -> ExecResult:
    """Run `argv` to completion (or `timeout`), capturing at most `output_limit` bytes of
    each stream; the process group is killed on timeout or cancellation."""
    started = trio.current_time()
    try:
        handle, feed = await _start(launcher, argv, cwd=cwd, env=env, stdin=stdin)
    except StartError as exc:
        if output is not None:
            output("stderr", str(exc).encode())
            return ExecResult(127, "", "", trio.current_time() - started)
        return ExecResult(127, "", str(exc), trio.current_time() - started)
    assert handle.captured is not None
    buffers = {"stdout": bytearray(), "stderr": bytearray()}
    truncated = False

    async def drain(fd: int, name: str) -> None:
        nonlocal truncated
        buf = buffers[name]
        async with trio.lowlevel.FdStream(fd) as stream:
            while chunk := await stream.receive_some(_READ):
                room = output_limit - sizes[name]
                if len(chunk) > room:
                    truncated = True
                    chunk = chunk[: max(room, 0)]
                sizes[name] += len(chunk)
                if output is None:
                    buf += chunk
                elif chunk:
                    output(name, chunk)

    timed_out = False
    sizes = {"stdout": 0, "stderr": 0}
    try:
        with trio.move_on_after(timeout) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain, handle.captured[0], "stdout")
                nursery.start_soon(drain, handle.captured[1], "stderr")
                if feed is not None:
                    nursery.start_soon(_feed, feed, stdin or b"")
                    feed = None
                await handle.wait()
        if scope.cancelled_caught:
            timed_out = True
            handle.signal_group(signal.SIGKILL)
            await handle.wait()
    finally:
        if feed is not None:
            os.close(feed)
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


async def _start(
    launcher: Spawner,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    stdin: bytes | None,
) -> tuple[Captured, int | None]:
    """The started command, and the write end of its stdin when there is input."""
    if stdin is None:
        return await launcher.spawn(argv, cwd=cwd, env=env, capture=True), None
    reader, feed = os.pipe()
    try:
        handle = await launcher.spawn(argv, cwd=cwd, env=env, capture=True, stdin=reader)
    except BaseException:
        os.close(feed)
        raise
    finally:
        os.close(reader)
    return handle, feed


async def _feed(fd: int, data: bytes) -> None:
    """Write `data` to the command's stdin and close it; a command that stops reading
    (or exits) first just does not get the rest."""
    async with trio.lowlevel.FdStream(fd) as stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(data)
