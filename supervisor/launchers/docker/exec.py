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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import trio

from supervisor.launchers.docker.events import int_or_none
from supervisor.launchers.docker.sdk import Capped, EngineClient, docker_errors, drain, feed_exec

EXEC_GRACE = 2.0  # past the exec timeout, stop reading even if something holds the pipes


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
    duration = trio.current_time() - started
    info = await client.call("inspect exec", client.api.exec_inspect, created["Id"])
    exit_code = None if info["Running"] else int_or_none(info["ExitCode"])
    timed_out = reading.cancelled_caught or (duration >= timeout and exit_code in (124, 137))
    return ExecResult(
        exit_code, out.data(), err.data(), duration, timed_out, out.truncated or err.truncated
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
    duration = trio.current_time() - started
    info = await client.call("inspect exec", client.api.exec_inspect, created["Id"])
    exit_code = None if info["Running"] else int_or_none(info["ExitCode"])
    timed_out = duration >= timeout and exit_code in (124, 137)
    return ExecResult(
        exit_code, out.data(), err.data(), duration, timed_out, out.truncated or err.truncated
    )
