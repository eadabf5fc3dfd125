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
from functools import partial
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
    more: trio.MemoryReceiveChannel[bytes] | None = None,
    signals: trio.MemoryReceiveChannel[int] | None = None,
) -> ExecResult:
    """Run `argv` to completion (or `timeout`), capturing at most `output_limit` bytes of
    each stream; the process group is killed on timeout or cancellation. `more` carries
    input after `stdin` (EOF when it closes), `signals` signals for the process group."""
    started = trio.current_time()
    piped = stdin is not None or more is not None
    try:
        handle, feed = await _start(launcher, argv, cwd=cwd, env=env, piped=piped)
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
                extras = trio.CancelScope()  # input and signals: until the command exits
                if feed is not None or signals is not None:
                    nursery.start_soon(
                        partial(
                            _extras,
                            extras,
                            handle,
                            feed=feed,
                            data=stdin,
                            more=more,
                            signals=signals,
                        )
                    )
                    feed = None
                await handle.wait()
                extras.cancel()
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
    piped: bool,
) -> tuple[Captured, int | None]:
    """The started command, and the write end of its stdin when there is input."""
    if not piped:
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


async def _extras(
    scope: trio.CancelScope,
    handle: Captured,
    *,
    feed: int | None,
    data: bytes | None,
    more: trio.MemoryReceiveChannel[bytes] | None,
    signals: trio.MemoryReceiveChannel[int] | None,
) -> None:
    """Write the command's input and forward signals to its group, until `scope` ends."""
    stream = None if feed is None else trio.lowlevel.FdStream(feed)  # owns it from here
    with scope:
        async with trio.open_nursery() as nursery:
            if signals is not None:
                nursery.start_soon(_forward, signals, handle)
            if stream is not None:
                await _feed(stream, data or b"", more)


async def _feed(
    stream: trio.lowlevel.FdStream, data: bytes, more: trio.MemoryReceiveChannel[bytes] | None
) -> None:
    """Write `data` (then what comes on `more`) to the command's stdin, and close it; a
    command that stops reading (or exits) first just does not get the rest."""
    async with stream:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            if data:
                await stream.send_all(data)
            if more is not None:
                async for piece in more:
                    await stream.send_all(piece)


async def _forward(signals: trio.MemoryReceiveChannel[int], handle: Captured) -> None:
    async for sig in signals:
        handle.signal_group(sig)
