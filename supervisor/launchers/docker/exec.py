"""Commands run inside a container, killed after a timeout, their output capped.

Why it is built this way:
- The kill comes from `timeout -s KILL` (coreutils or busybox) inside the container,
  which runs the command in its own process group; the image must provide it.
- Output is read to the end even past the cap (`sdk.Capped`): a writer blocked on a
  full pipe never exits. Past the timeout plus `EXEC_GRACE` we stop reading anyway.
- Exec output is a long read: it runs on a limiter of its own, so slow execs never starve
  a stop or the event stream.
- Input goes through the exec's stdin, not `put_archive`: that writes beside a tmpfs
  mount, not into it, and refuses a read-only container outright; a sandbox's workdir is
  both.
- An exec that streams its output or takes input is attached (`run_exec_attached`): the
  input is written by one worker thread while another reads, so a command that echoes
  more than the pipes hold never deadlocks. The engine has no way to kill an exec, so
  `sh` reports its pid on stdout (the first line, stripped from the output: the engine
  reads stdout and stderr apart, so only on stdout is it sure to come before the
  command's own output there) before becoming `timeout`,
  which leads its own process group: when the caller gives up (a client that went away),
  a second exec kills that group. Other signals (HUP, INT, QUIT, TERM) go to `timeout`,
  which passes them on to the group.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from supervisor.launchers.docker.events import int_or_none
from supervisor.launchers.docker.sdk import (
    Attached,
    Capped,
    DockerError,
    EngineClient,
    docker_errors,
    drain,
    feed_exec,
)

EXEC_GRACE = 2.0  # past the exec timeout, stop reading even if something holds the pipes
KILL_TIMEOUT = 10.0
_REPORT_PID = 'echo "$$"; exec "$@"'
OutputSink = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class ExecResult:
    """One command run inside a container; output is capped per stream."""

    exit_code: int | None  # None: still running when we stopped reading
    stdout: bytes
    stderr: bytes
    duration_s: float
    timed_out: bool
    truncated: bool


async def run_exec(
    client: EngineClient,
    limiter: trio.CapacityLimiter,
    container_id: str,
    argv: Sequence[str],
    *,
    timeout: float,
    output_limit: int,
    workdir: str | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
) -> ExecResult:
    """Run `argv` in the container, its output read on `limiter`; see `DockerEngine.exec`."""
    command = ["timeout", "-s", "KILL", f"{timeout:.3f}", *argv]
    created = await client.call(
        "exec",
        client.api.exec_create,
        container_id,
        command,
        workdir=workdir,
        environment=dict(env) if env else None,
        user=user or "",
    )
    started = trio.current_time()
    out, err = Capped(output_limit), Capped(output_limit)
    with trio.move_on_after(timeout + EXEC_GRACE) as reading:
        await client.read_stream(
            partial(client.api.exec_start, created["Id"], stream=True, demux=True),
            partial(drain, out=out, err=err),
            "exec",
            limiter,
        )
    return await _result(
        client, created["Id"], started=started, timeout=timeout, out=out, err=err, reading=reading
    )


async def run_exec_input(
    client: EngineClient,
    limiter: trio.CapacityLimiter,
    container_id: str,
    argv: Sequence[str],
    data: bytes,
    *,
    timeout: float,
    output_limit: int,
    workdir: str | None = None,
) -> ExecResult:
    """Run `argv` with `data` on its stdin, on `limiter`; see `DockerEngine.exec_input`."""
    command = ["timeout", "-s", "KILL", f"{timeout:.3f}", *argv]
    created = await client.call(
        "exec", client.api.exec_create, container_id, command, stdin=True, workdir=workdir
    )
    started = trio.current_time()
    out, err = Capped(output_limit), Capped(output_limit)
    feed = partial(feed_exec, client.api, created["Id"], data, out=out, err=err)
    with docker_errors("exec with input"), trio.fail_after(timeout + EXEC_GRACE):
        await trio.to_thread.run_sync(feed, limiter=limiter, abandon_on_cancel=True)
    return await _result(client, created["Id"], started=started, timeout=timeout, out=out, err=err)


class _Frames:
    """Takes an attached exec's frames (in the reading thread): strips the pid line off
    stdout, caps each stream, and hands what is kept to `output` on the loop."""

    def __init__(self, out: Capped, err: Capped, output: OutputSink | None) -> None:
        self.out, self.err, self.output = out, err, output
        self.pid: int | None = None
        self._head = b""

    def take(self, is_stderr: bool, chunk: bytes) -> None:
        if not is_stderr and self.pid is None:
            self._head += chunk
            line, newline, chunk = self._head.partition(b"\n")
            if not newline:
                return
            self.pid = int(line) if line.isdigit() else 0
        capped = self.err if is_stderr else self.out
        before = capped.size
        capped.add(chunk)
        kept = chunk[: capped.size - before]
        if self.output is not None:
            capped.chunks.clear()  # handed over, not kept: only the count matters
            if kept:
                name = "stderr" if is_stderr else "stdout"
                trio.from_thread.run_sync(self.output, name, kept)


async def _close_when_cancelled(attached: Attached) -> None:
    try:
        await trio.sleep_forever()
    finally:
        attached.close()


async def run_exec_attached(
    client: EngineClient,
    limiter: trio.CapacityLimiter,
    container_id: str,
    argv: Sequence[str],
    *,
    timeout: float,
    output_limit: int,
    workdir: str | None = None,
    env: Mapping[str, str] | None = None,
    user: str | None = None,
    stdin: bytes | None = None,
    output: OutputSink | None = None,
    more: trio.MemoryReceiveChannel[bytes] | None = None,
    signals: trio.MemoryReceiveChannel[int] | None = None,
) -> ExecResult:
    """Run `argv` with `stdin` (then `more`, up to its close) fed to it, its output handed
    to `output` as it comes (or kept in the result without one), and `signals` sent to its
    process group; the group is killed if we are cancelled."""
    command = ["sh", "-c", _REPORT_PID, "sh", "timeout", "-s", "KILL", f"{timeout:.3f}", *argv]
    created = await client.call(
        "exec",
        client.api.exec_create,
        container_id,
        command,
        stdin=stdin is not None or more is not None,
        workdir=workdir,
        environment=dict(env) if env else None,
        user=user or "",
    )
    started = trio.current_time()
    out, err = Capped(output_limit), Capped(output_limit)
    frames = _Frames(out, err, None if output is None else output)
    attached = Attached()
    try:
        with trio.move_on_after(timeout + EXEC_GRACE) as reading, docker_errors("exec"):
            await trio.to_thread.run_sync(
                attached.open, client.api, created["Id"], limiter=client.limiter,
                abandon_on_cancel=True,
            )  # fmt: skip
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_when_cancelled, attached)
                if stdin is not None or more is not None:
                    nursery.start_soon(_feed, attached, stdin or b"", more, limiter)
                if signals is not None:
                    forward = partial(_forward, client, container_id, frames, user, signals)
                    nursery.start_soon(forward)
                # Not abandoned on cancel: `attached.close()` is what ends the read.
                await trio.to_thread.run_sync(attached.read, frames.take, limiter=limiter)
                nursery.cancel_scope.cancel()
    except BaseException:
        with trio.CancelScope(shield=True):
            pid = frames.pid or await _pid_of(client, created["Id"])
            await _kill_group(client, container_id, pid, user)
        raise
    finally:
        attached.close()
    return await _result(
        client, created["Id"], started=started, timeout=timeout, out=out, err=err, reading=reading
    )


async def _feed(
    attached: Attached,
    data: bytes,
    more: trio.MemoryReceiveChannel[bytes] | None,
    limiter: trio.CapacityLimiter,
) -> None:
    """The command's stdin: `data`, then what comes on `more`, then EOF."""
    await trio.to_thread.run_sync(partial(attached.write, data, end=more is None), limiter=limiter)
    if more is not None:
        async for piece in more:
            await trio.to_thread.run_sync(attached.write, piece, limiter=limiter)
        await trio.to_thread.run_sync(partial(attached.write, b"", end=True), limiter=limiter)


async def _forward(
    client: EngineClient,
    container_id: str,
    frames: _Frames,
    user: str | None,
    signals: trio.MemoryReceiveChannel[int],
) -> None:
    async for sig in signals:
        await _signal_group(client, container_id, frames.pid, user, sig)


async def _pid_of(client: EngineClient, exec_id: str) -> int | None:
    """The exec's pid in its container, cancelled before it said so itself: from the
    engine's host pid, where the engine is local (else None)."""
    with trio.move_on_after(KILL_TIMEOUT), contextlib.suppress(DockerError, OSError, ValueError):
        info = await client.call("inspect exec", client.api.exec_inspect, exec_id)
        status = await trio.Path(f"/proc/{int(info['Pid'])}/status").read_text()
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                return int(line.split()[-1])
    return None


async def _kill_group(
    client: EngineClient, container_id: str, pid: int | None, user: str | None
) -> None:
    """Kill an attached exec's process group (best effort: the container may be gone)."""
    await _signal_group(client, container_id, pid, user, signal.SIGKILL)


async def _signal_group(
    client: EngineClient, container_id: str, pid: int | None, user: str | None, sig: int
) -> None:
    """Signal an attached exec's process group, by a second exec (best effort).

    KILL goes to the whole group; another signal to `timeout` alone, which passes it on
    to the group once (signalling the group as well would deliver it twice).
    """
    if not pid:
        return
    target = f"-{pid}" if sig == signal.SIGKILL else str(pid)
    kill = ["sh", "-c", 'kill -s "$1" -- "$2"', "sh", signal.Signals(sig).name[3:], target]
    with trio.move_on_after(KILL_TIMEOUT), contextlib.suppress(DockerError):
        created = await client.call(
            "signal exec", client.api.exec_create, container_id, kill, user=user or ""
        )
        await client.call("signal exec", client.api.exec_start, created["Id"])


async def _result(
    client: EngineClient,
    exec_id: str,
    *,
    started: float,
    timeout: float,
    out: Capped,
    err: Capped,
    reading: trio.CancelScope | None = None,
) -> ExecResult:
    """What an ended exec did: its code from the engine, timed out if `reading` was cut
    off or `timeout` (coreutils' 124, or KILL's 137) ended it."""
    duration = trio.current_time() - started
    info = await client.call("inspect exec", client.api.exec_inspect, exec_id)
    exit_code = None if info["Running"] else int_or_none(info["ExitCode"])
    cut = reading is not None and reading.cancelled_caught
    timed_out = cut or (duration >= timeout and exit_code in (124, 137))
    return ExecResult(
        exit_code, out.data(), err.data(), duration, timed_out, out.truncated or err.truncated
    )
