"""One isolated sandbox as the daemon holds it: its bwrap'd agent, and the commands in it.

`Namespace.open` leases the sandbox a host uid, gives it its work directory, makes its
cgroup, and spawns its bwrap through the launcher, like any child: recorded in the state
directory and known to the guardian, so it dies with the daemon even when the daemon is
SIGKILLed (the guardian kills bwrap's process group, the agent, PID 1, with it; and the
agent exits when its socket to the daemon closes; when PID 1 dies, the kernel kills every
process of the sandbox). The agent is moved into the
sandbox's cgroup before it starts anything, then says it is ready.

`spawn` is the primitive every exec goes through: one packet to the agent with the
command and two pipes for its output; the agent forks it inside the namespaces. What
comes back is a `SandboxProcess`, which `sandbox.capture.run_captured` drives the same
way as a host child (wait, signal its group, read the pipes), so a streaming exec can
build on it. One socket serves any number of concurrent commands: whoever waits reads
the next answer and hands it to its owner (a fair lock takes turns), so no background
task is needed. Should the agent ever fail to confirm a kill, or stop answering, the
daemon kills the sandbox from outside (the bwrap it spawned itself): no pid reported by
the sandbox is ever trusted.
"""

from __future__ import annotations

import array
import errno
import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import trio

from supervisor.errors import SandboxStateError, StartError
from supervisor.launchers.isolation.bubblewrap import (
    SANDBOX_HOME,
    SandboxLayout,
    sandbox_environment,
)
from supervisor.launchers.isolation.cgroups import Cgroup
from supervisor.launchers.isolation.commands import KILL_GRACE, KILLED, SandboxProcess
from supervisor.launchers.isolation.uids import UidLease, UidLeases
from supervisor.launchers.local import Credentials, LocalLauncher, ProcessHandle

log = structlog.get_logger("supervisor.sandbox.isolation")

START_TIMEOUT = 30.0
ANSWER_TIMEOUT = 10.0  # spawn, ping and reset: an agent this slow is wedged
SEND_BUFFER = 4 << 20
_MAX_ANSWER = 65536


@dataclass(frozen=True, slots=True)
class Isolation:
    """How one environment's sandboxes are isolated (built by the process backend)."""

    layout: SandboxLayout
    uids: UidLeases
    cgroup: Cgroup  # the environment's group; each sandbox gets a child of it
    memory: int | None = None
    processes: int | None = None
    start_timeout: float = START_TIMEOUT


class Namespace:
    """One sandbox's namespaces, held by its agent; open it with `Namespace.open`."""

    def __init__(
        self,
        name: str,
        handle: ProcessHandle,
        ctl: socket.socket,
        *,
        lease: UidLease,
        cgroup: Cgroup,
    ) -> None:
        self.name = name
        self.handle = handle
        self.uid = lease.uid
        self.cgroup = cgroup
        self._ctl = ctl
        self._lease = lease
        self._reader = trio.Lock()  # fair: waiters take turns reading answers
        self._processes: dict[int, SandboxProcess] = {}
        self._answers: dict[int, trio.Event] = {}
        self._next = 0
        self._ready = trio.Event()
        self._reset_done = trio.Event()
        self.dead: str | None = None
        self._gone = trio.Event()
        self._closed = False

    # ----------------------------------------------------------------------- opening

    @classmethod
    async def open(
        cls, launcher: LocalLauncher, isolation: Isolation, workdir: Path, name: str
    ) -> Namespace:
        """Bring one sandbox's namespaces up around `workdir`, its agent ready.

        Raises:
            SandboxStateError: bwrap or the agent failed (the message has bwrap's words).
        """
        lease = isolation.uids.lease()
        cgroup = isolation.cgroup.child(name)
        launched: tuple[ProcessHandle, socket.socket, int] | None = None
        stderr: list[str] = []
        try:
            os.chown(workdir, lease.uid, lease.uid)
            cgroup.create(memory=isolation.memory, processes=isolation.processes)
            launched = await _launch(
                launcher, isolation, workdir, name, uid=lease.uid, stderr=stderr
            )
            handle, ctl, info = launched
            namespace = cls(name, handle, ctl, lease=lease, cgroup=cgroup)
            with trio.fail_after(isolation.start_timeout):
                agent = await _agent_pid(info, handle)
                if agent is None:
                    await handle.wait()
                    await handle.output_done.wait()
                    raise SandboxStateError(f"sandbox {name}: bwrap failed: {_said(stderr)}")
                cgroup.add(agent)  # before the agent starts anything
                await namespace.until(namespace._ready)
            if namespace.dead is not None:
                await handle.output_done.wait()
                raise SandboxStateError(
                    f"sandbox {name}: its agent died at start ({namespace.dead}): {_said(stderr)}"
                )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                if launched is not None:
                    launched[0].kill()
                    await _reaped(launched[0])
                    launched[1].close()
                await remove_cgroup(cgroup)
                lease.release()
            if isinstance(exc, trio.TooSlowError):
                raise SandboxStateError(
                    f"sandbox {name}: not ready within {isolation.start_timeout:g}s"
                ) from None
            if isinstance(exc, OSError | StartError):
                raise SandboxStateError(f"sandbox {name}: {exc}") from exc
            raise
        log.debug("sandbox_namespace_open", sandbox=name, uid=lease.uid, pid=handle.pid)
        return namespace

    # ------------------------------------------------------------------------- talking

    def send_nowait(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None:
        """Send one request now (requests are small; the agent reads them at once)."""
        if self.dead is not None:
            return
        data = json.dumps(message).encode()
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        try:
            self._ctl.sendmsg([data], ancillary)
        except BlockingIOError:
            self._die("the agent stopped reading its requests")
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                raise ValueError(
                    f"the command is too large for the sandbox ({len(data)} bytes)"
                ) from None
            self._die(f"its control socket failed: {exc.strerror}")

    async def until(self, event: trio.Event) -> None:
        """Read answers (taking turns with other waiters) until `event` is set or the
        sandbox is gone."""
        while not event.is_set() and self.dead is None:
            async with self._reader:
                if event.is_set() or self.dead is not None:
                    return
                try:
                    await trio.lowlevel.wait_readable(self._ctl)
                    data = self._ctl.recv(_MAX_ANSWER)
                except BlockingIOError:
                    continue
                except trio.ClosedResourceError:
                    data, reason = b"", "stopped"
                except OSError as exc:
                    data, reason = b"", exc.strerror or str(exc)
                else:
                    reason = "its agent exited"
                if not data:
                    self._die(reason or "its agent exited")
                    return
                self._dispatch(json.loads(data))

    def _dispatch(self, message: Mapping[str, Any]) -> None:
        op = message.get("op")
        if op == "ready":
            self._ready.set()
        elif op == "reset":
            self._reset_done.set()
        elif op == "pong":
            answered = self._answers.pop(int(message["id"]), None)
            if answered is not None:
                answered.set()
        elif op in ("started", "failed", "exited"):
            process = self._processes.get(int(message["id"]))
            if process is not None:
                process.answer(message)
                if process.exited.is_set():
                    del self._processes[process.ident]

    def _die(self, reason: str) -> None:
        """The sandbox is unusable: fail whatever waits on it, kill it from outside."""
        if self.dead is not None:
            return
        self.dead = reason
        self.handle.kill()
        for process in self._processes.values():
            process.failure = process.failure or f"sandbox {self.name} is gone: {reason}"
            process.answered.set()
            process.finish(KILLED)
        self._processes.clear()
        for event in (self._ready, self._reset_done, *self._answers.values()):
            event.set()
        self._gone.set()

    async def abort(self, reason: str) -> None:
        """Kill the whole sandbox from outside (a wedged agent), and wait for it."""
        log.error("sandbox_killed", sandbox=self.name, reason=reason)
        self._die(reason)
        with trio.CancelScope(shield=True):
            await _reaped(self.handle)

    # ------------------------------------------------------------------------ commands

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | str = SANDBOX_HOME,
        env: Mapping[str, str] | None = None,
        capture: bool = True,
        stdin: int | None = None,
    ) -> SandboxProcess:
        """Start `argv` in the sandbox, in its own session; its stdout and stderr are the
        read ends in `captured`, which the caller must drain and close. `stdin` (a file
        descriptor, /dev/null if None) is passed to the agent, and stays the caller's.

        Raises:
            StartError: the command could not be executed (not found, not allowed).
            SandboxStateError: the sandbox is gone.
        """
        if not capture:
            raise ValueError("commands in a sandbox always capture their output")
        if not argv:
            raise ValueError("argv must not be empty")
        self._check()
        self._next += 1
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        process = SandboxProcess(self, self._next, (out_r, err_r))
        self._processes[process.ident] = process
        request = {
            "op": "spawn",
            "id": process.ident,
            "argv": list(argv),
            "cwd": str(cwd),
            "env": dict(sandbox_environment() if env is None else env),
        }
        try:
            fds = (out_w, err_w) if stdin is None else (out_w, err_w, stdin)
            self.send_nowait(request, fds)
        except ValueError as exc:
            self._processes.pop(process.ident, None)
            os.close(out_r)
            os.close(err_r)
            raise StartError(str(exc)) from None
        finally:
            os.close(out_w)
            os.close(err_w)
        try:
            with trio.move_on_after(ANSWER_TIMEOUT):
                await self.until(process.answered)
        except BaseException:
            process.kill()  # cancelled: whatever started must not outlive the request
            raise
        if not process.answered.is_set():
            await self.abort("the agent did not start a command")
        if process.failure is not None:
            os.close(out_r)
            os.close(err_r)
            process.captured = None
            if self.dead is not None:
                raise SandboxStateError(process.failure)
            raise StartError(process.failure)
        return process

    async def reset(self) -> None:
        """Kill every process of the sandbox but its agent, and empty /tmp, /dev/shm,
        the message queues and SysV IPC (the work directory is the features' to clean).

        Raises:
            SandboxStateError: the sandbox is gone or did not answer in time.
        """
        self._check()
        self._reset_done = trio.Event()
        self.send_nowait({"op": "reset"})
        with trio.move_on_after(ANSWER_TIMEOUT):
            await self.until(self._reset_done)
        if not self._reset_done.is_set():
            await self.abort("the agent did not finish a reset")
        self._check()

    async def ping(self) -> None:
        """A round trip to the agent.

        Raises:
            SandboxStateError: the sandbox is gone or did not answer in time.
        """
        self._check()
        self._next += 1
        answered = self._answers[self._next] = trio.Event()
        self.send_nowait({"op": "ping", "id": self._next})
        with trio.move_on_after(ANSWER_TIMEOUT):
            await self.until(answered)
        if not answered.is_set():
            await self.abort("the agent did not answer a ping")
        self._check()

    def _check(self) -> None:
        if self.dead is not None:
            raise SandboxStateError(f"sandbox {self.name} is gone: {self.dead}")

    # ------------------------------------------------------------------------- the end

    async def wait_dead(self) -> str:
        """Return when the sandbox died by itself (its bwrap or agent exited)."""
        async with trio.open_nursery() as nursery:

            async def watch_agent() -> None:
                await self.until(self._gone)
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch_agent)
            await self.handle.wait()
            nursery.cancel_scope.cancel()
        term = await self.handle.wait() if self.handle.exited.is_set() else None
        self._die(f"bwrap {term.detail}" if term is not None else (self.dead or "gone"))
        return f"sandbox {self.name}: {self.dead}"

    async def close(self) -> None:
        """Kill the sandbox and everything in it; free its cgroup and its uid. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            self._die("stopped")
            await _reaped(self.handle)
            trio.lowlevel.notify_closing(self._ctl)
            self._ctl.close()
            if await remove_cgroup(self.cgroup):
                self._lease.release()
            else:  # kept leased: its uid may still own a process somewhere
                log.warning("sandbox_cgroup_left", sandbox=self.name)


async def _reaped(handle: ProcessHandle, timeout: float = KILL_GRACE) -> None:
    """Wait (bounded) for a killed bwrap to be reaped: when the daemon itself is being
    torn down, the launcher that reaps may already be gone."""
    with trio.move_on_after(timeout):
        await handle.wait()


async def _launch(
    launcher: LocalLauncher,
    isolation: Isolation,
    workdir: Path,
    name: str,
    *,
    uid: int,
    stderr: list[str],
) -> tuple[ProcessHandle, socket.socket, int]:
    """Spawn the sandbox's bwrap as `uid`: (its handle, our end of the agent's socket,
    the read end of bwrap's --info-fd)."""
    ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctl.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    info_r, info_w = os.pipe()
    agent_r, agent_w = os.pipe()
    try:
        os.write(agent_w, isolation.layout.agent)  # a few KiB: the pipe holds it all
        os.close(agent_w)
        argv = isolation.layout.argv(
            workdir, ctl_fd=child.fileno(), info_fd=info_w, agent_fd=agent_r
        )
        handle = await launcher.spawn(
            argv,
            cwd=Path("/"),
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
            credentials=Credentials(uid, uid, ()),
            on_output=lambda stream, line: _keep(stderr, line),
            record_as=f"sandbox {name}",
            pass_fds=(child.fileno(), info_w, agent_r),
        )
    except BaseException:
        ctl.close()
        os.close(info_r)
        raise
    finally:
        child.close()
        os.close(info_w)
        os.close(agent_r)
    ctl.setblocking(False)
    return handle, ctl, info_r


async def _agent_pid(info: int, handle: ProcessHandle) -> int | None:
    """The agent's host pid from bwrap's --info-fd (None if bwrap failed first)."""
    data = b""
    try:
        async with trio.lowlevel.FdStream(info) as stream:
            while chunk := await stream.receive_some(4096):
                data += chunk
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return None
    if not data:
        return None
    pid = int(json.loads(data)["child-pid"])
    # bwrap wrote it, before anything of the sandbox ran: still, it must be bwrap's child.
    if _parent(pid) != handle.pid:
        raise SandboxStateError(f"bwrap reported pid {pid}, which is not its child")
    return pid


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("PPid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


async def remove_cgroup(cgroup: Cgroup, timeout: float = 5.0) -> bool:
    """Kill what is left in `cgroup` and remove it, retrying while the kernel reaps."""
    with trio.move_on_after(timeout):
        while True:
            cgroup.kill()
            if cgroup.remove():
                return True
            await trio.sleep(0.01)  # dying processes leave it within milliseconds
    return False


def _keep(lines: list[str], line: str) -> None:
    if len(lines) < 20:
        lines.append(line)
    log.warning("sandbox_bwrap_output", line=line)


def _said(lines: list[str]) -> str:
    return "; ".join(lines[-5:]) or "no message"
