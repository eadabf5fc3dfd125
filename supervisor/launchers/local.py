"""Local processes: spawned in their own session, tied to the daemon's life, reaped by pidfd.

Why it is built this way:
- Children are started with a plain vfork + exec (0.15 ms) on the event loop's thread;
  only a user switch (which makes CPython fully fork) goes to a worker thread. Nothing
  runs between fork and exec, so nothing there can slow a restart down.
- Children die with the daemon even when it is SIGKILLed: a small guardian process
  (`launchers/guardian.py`) holds the read end of a pipe the daemon writes each child's
  pid to, and kills their process groups when the pipe reaches end-of-file. That costs a
  pipe write per spawn, and it reaches grandchildren too, which a parent-death signal
  never would.
- Every child leads its own session and process group, so a stop reaches its whole tree;
  when the leader exits, whatever is left of its group is killed too: nothing leaks.
- Exits are awaited on pidfds (no polling, no thread per child) by one reaper task for
  all children: every pidfd sits in one epoll set whose descriptor the reaper awaits, so
  a child costs a kernel registration, not a trio task, its frames and its wait (about
  1.7 KB each at 1,000 children). Each child's output is read continuously so a chatty
  child never blocks on a full pipe, by one reader task for all of them (`relay.py`).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import resource
import select
import signal
import subprocess
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import outcome
import structlog
import trio

from supervisor.errors import MisconfiguredError, StartError
from supervisor.launchers import guardian
from supervisor.launchers.relay import ChunkSink, LineSink, PipeReader
from supervisor.supervision.policy import Termination, describe_exit

log = structlog.get_logger("supervisor.launcher")

# Variables systemd hands to *us*; a child that saw them would talk to systemd as if it
# were the service (a stray READY=1 or WATCHDOG=1 from a child would lie about the daemon).
SCRUBBED_ENV = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}
)


def scrubbed_environment(extra: Mapping[str, str] = {}) -> dict[str, str]:
    """The daemon's environment without systemd's per-service variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class Credentials:
    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None


NO_CREDENTIALS = Credentials(None, None, None)


class ProcessRecords(Protocol):
    """Where launched processes are remembered across a crash (the state directory)."""

    def record(self, pid: int, resource: str) -> None: ...
    def forget(self, pid: int) -> None: ...


def resolve_credentials(user: str | int | None, group: str | int | None) -> Credentials:
    """Look up `user`/`group` for a child.

    Raises:
        MisconfiguredError: unknown names, or a switch requested while not root.
    """
    if user is None and group is None:
        return NO_CREDENTIALS
    if os.geteuid() != 0:
        raise MisconfiguredError("user/group is set but the daemon does not run as root")
    uid = gid = None
    groups: tuple[int, ...] | None = None
    if user is not None:
        try:
            entry = pwd.getpwuid(user) if isinstance(user, int) else pwd.getpwnam(user)
        except KeyError:
            raise MisconfiguredError(f"unknown user {user!r}") from None
        uid, gid = entry.pw_uid, entry.pw_gid
        groups = tuple(g.gr_gid for g in grp.getgrall() if entry.pw_name in g.gr_mem)
    if group is not None:
        try:
            gid = (grp.getgrgid(group) if isinstance(group, int) else grp.getgrnam(group)).gr_gid
        except KeyError:
            raise MisconfiguredError(f"unknown group {group!r}") from None
    return Credentials(uid, gid, groups)


class ProcessHandle:
    """A spawned child: its exit, its process group, its output relay."""

    # One per running child: slots, and the output event made only when someone waits
    # (the supervisor never does; a namespace sandbox's exec does).
    __slots__ = (
        "_output_done",
        "_relaying",
        "captured",
        "exited",
        "popen",
        "stop_signal",
        "termination",
    )

    def __init__(
        self, popen: subprocess.Popen[bytes], stop_signal: int, *, relaying: bool = False
    ) -> None:
        self.popen = popen
        self.stop_signal = stop_signal
        self.termination: Termination | None = None
        self.exited = trio.Event()
        self.captured: tuple[int, int] | None = None  # (stdout, stderr) read ends, if asked
        self._relaying = relaying
        self._output_done: trio.Event | None = None

    @property
    def output_done(self) -> trio.Event:
        """Set once everything the child wrote has been relayed (at once if not relayed)."""
        if self._output_done is None:
            self._output_done = trio.Event()
            if not self._relaying:
                self._output_done.set()
        return self._output_done

    def output_relayed(self) -> None:
        """The relay read both pipes to their end."""
        self._relaying = False
        if self._output_done is not None:
            self._output_done.set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def ident(self) -> str | None:
        return None

    async def wait(self) -> Termination:
        await self.exited.wait()
        assert self.termination is not None
        return self.termination

    async def stop(self, timeout: float) -> Termination:
        """Send the stop signal to the group, SIGKILL it after `timeout`, await the exit."""
        if not self.exited.is_set():
            self.signal_group(self.stop_signal)
            with trio.move_on_after(timeout):
                await self.exited.wait()
        if not self.exited.is_set():
            log.warning("process_stop_timeout", pid=self.pid, timeout=timeout)
            self.signal_group(signal.SIGKILL)
        return await self.wait()

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def signal_group(self, sig: int) -> None:
        """Signal the child's whole process group; a group already gone is fine."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)


class LocalLauncher:
    """Spawns and reaps local processes; open it with `open_local_launcher()`."""

    def __init__(self, nursery: trio.Nursery, records: ProcessRecords | None = None) -> None:
        self._nursery = nursery
        self._records = records
        self._children: dict[int, ProcessHandle] = {}
        self._guardian: _Guardian | None = None
        self._guardian_done = trio.Event()
        self._closing = False
        self._withheld: frozenset[str] = frozenset()
        self._exits: select.epoll | None = None  # the children's pidfds, once one spawned
        self._watched: dict[int, ProcessHandle] = {}  # by pidfd
        self._pipes = PipeReader(nursery)  # every relayed child's output, in one task

    @property
    def children(self) -> Mapping[int, ProcessHandle]:
        return self._children

    def withhold(self, names: Iterable[str]) -> None:
        """Keep these variables (the daemon's secrets: a `token_env`, a `password_env`)
        out of every child's environment from now on, whatever the caller passes."""
        self._withheld = frozenset(names)

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        credentials: Credentials = NO_CREDENTIALS,
        stop_signal: int = signal.SIGTERM,
        on_output: LineSink | None = None,
        on_chunk: ChunkSink | None = None,
        record_as: str | None = None,
        capture: bool = False,
        pass_fds: Sequence[int] = (),
        stdin: int | None = None,
        outputs: tuple[int, int] | None = None,
    ) -> ProcessHandle:
        """Start `argv` in its own session; `on_output` receives its lines and `on_chunk`
        its output as read (else it is discarded).

        `capture=True` instead leaves the raw output to the caller: `handle.captured` holds
        the read ends of stdout and stderr, which the caller must drain and close.

        `record_as` (a resource name) also records the process in the state directory,
        for the next start to clean up should the daemon and its guardian both die.
        `pass_fds` are left open in the child (a sandbox's bwrap gets its sockets so).
        `stdin` is a file descriptor for its standard input (/dev/null if None).
        `outputs` are descriptors for its stdout and stderr (journald's streams, say),
        given to it and closed here: the daemon then reads none of its output.

        Raises:
            StartError: the command could not be executed.
        """
        out_r = err_r = None
        stdout: int = subprocess.DEVNULL
        stderr: int = subprocess.DEVNULL
        relayed = on_output is not None or on_chunk is not None
        if outputs is not None:
            stdout, stderr = outputs
        elif relayed or capture:
            out_r, stdout = os.pipe()
            err_r, stderr = os.pipe()

        def fork() -> subprocess.Popen[bytes]:
            source = os.environ if env is None else env
            return subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={k: v for k, v in source.items() if k not in self._withheld},
                stdin=subprocess.DEVNULL if stdin is None else stdin,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                pass_fds=tuple(pass_fds),
                user=credentials.uid,
                group=credentials.gid,
                extra_groups=credentials.groups,
            )

        try:
            if credentials == NO_CREDENTIALS:
                # vfork + exec: back in ~0.15 ms, cheaper than handing off to a thread.
                result: outcome.Outcome[subprocess.Popen[bytes]] = outcome.capture(fork)
                # The child has its copy: a start must not hold the environment across the
                # checkpoint, or 1,000 concurrent starts keep 1,000 copies alive (a peak
                # that leaves ~7 KB of freed heap per resource behind).
                env = None
                await trio.lowlevel.cancel_shielded_checkpoint()  # a cancel must not orphan it
            else:
                # A user switch makes CPython fork the whole daemon: keep it off the loop.
                # Not abandoned on cancel, so the child is always registered.
                result = await trio.to_thread.run_sync(outcome.capture, fork)
        finally:
            for fd in (stdout, stderr):
                if fd >= 0:
                    os.close(fd)
        try:
            popen = result.unwrap()
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in argv or env
            for read_end in (out_r, err_r):
                if read_end is not None:
                    os.close(read_end)
            if isinstance(exc, ValueError):
                raise StartError(f"cannot run {argv[0]!r}: {exc}") from None
            raise StartError(_spawn_error(argv, cwd, exc)) from None
        handle = ProcessHandle(popen, stop_signal, relaying=relayed and not capture)
        self._children[popen.pid] = handle
        if self._guardian is not None:
            self._guardian.announce(f"+{popen.pid}")
        if self._records is not None and record_as is not None:
            self._records.record(popen.pid, record_as)
        self._watch_exit(handle)
        if capture:
            assert out_r is not None
            assert err_r is not None
            handle.captured = (out_r, err_r)
        elif relayed:
            assert out_r is not None
            assert err_r is not None
            self._pipes.relay(out_r, err_r, on_output, on_chunk, handle.output_relayed)
        return handle

    def _watch_exit(self, handle: ProcessHandle) -> None:
        """Add the child's pidfd to the exit set; the first child starts the reaper."""
        if self._exits is None:
            self._exits = select.epoll()
            self._nursery.start_soon(self._reap_all, self._exits)
        pidfd = os.pidfd_open(handle.pid)
        self._watched[pidfd] = handle
        self._exits.register(pidfd, select.EPOLLIN)

    async def _reap_all(self, exits: select.epoll) -> None:
        """Reap every child as it exits, until cancelled with the launcher."""
        try:
            while True:
                await trio.lowlevel.wait_readable(exits.fileno())
                for pidfd, _ in exits.poll(0):
                    exits.unregister(pidfd)
                    os.close(pidfd)
                    self._reaped(self._watched.pop(pidfd))
        finally:
            trio.lowlevel.notify_closing(exits.fileno())
            for pidfd in self._watched:
                os.close(pidfd)
            self._watched.clear()
            exits.close()

    def _reaped(self, handle: ProcessHandle) -> None:
        returncode = handle.popen.poll()
        if returncode is None:  # pragma: no cover - pidfd readable means it exited
            returncode = handle.popen.wait()
        handle.signal_group(signal.SIGKILL)  # whatever the leader left in its group
        handle.termination = describe_exit(returncode)
        self._children.pop(handle.pid, None)
        if self._guardian is not None:
            self._guardian.announce(f"-{handle.pid}")
        if self._records is not None:
            self._records.forget(handle.pid)
        handle.exited.set()

    async def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every child still alive and wait (bounded) for them to be reaped."""
        children = list(self._children.values())
        for child in children:
            child.kill()
        with trio.move_on_after(timeout):
            for child in children:
                await child.exited.wait()

    async def serve_guardian(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the guardian; if it dies while we still need it, start one that knows all."""
        try:
            await self._keep_guardian(task_status)
        finally:
            self._guardian_done.set()

    async def close(self) -> None:
        """Kill every child, then let the guardian go (it exits at end-of-file)."""
        await self.kill_all()
        self._closing = True  # nothing is listed any more: the guardian just exits
        if self._guardian is not None:
            self._guardian.close()
        with trio.move_on_after(5.0):
            await self._guardian_done.wait()
        if self._guardian is not None and self._guardian.popen.poll() is None:
            self._guardian.popen.kill()

    async def _keep_guardian(self, task_status: trio.TaskStatus[None]) -> None:
        while True:
            guardian_ = _Guardian.start()
            for pid in self._children:
                guardian_.announce(f"+{pid}")
            self._guardian = guardian_
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED  # only the first one is awaited
            pidfd = os.pidfd_open(guardian_.popen.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                trio.lowlevel.notify_closing(pidfd)
                os.close(pidfd)
                guardian_.close()
            returncode = guardian_.popen.wait()  # it has exited: this only reaps
            if self._closing:
                return
            log.error("guardian_died", returncode=returncode, detail="starting a new one")


class _Guardian:
    """The daemon's side of the guardian: its process and the write end of its pipe."""

    def __init__(self, popen: subprocess.Popen[bytes], pipe: int) -> None:
        self.popen = popen
        self.pipe = pipe
        self._warned = False

    @classmethod
    def start(cls) -> _Guardian:
        read_end, write_end = os.pipe()
        try:
            popen = subprocess.Popen(
                guardian.argv(),
                stdin=read_end,
                start_new_session=True,  # a Ctrl-C in the terminal is for the daemon
                # It needs nothing from the daemon's environment, which may hold secrets.
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
            )
        finally:
            os.close(read_end)
        os.set_blocking(write_end, False)
        return cls(popen, write_end)

    def announce(self, line: str) -> None:
        """Tell the guardian about a spawn (+PID) or a reap (-PID); never blocks."""
        if self.pipe < 0:
            return
        try:
            os.write(self.pipe, f"{line}\n".encode())
        except (BlockingIOError, BrokenPipeError) as exc:
            # A guardian that stopped reading (or died) must not stall supervision.
            if not self._warned:
                log.error("guardian_not_reading", error=type(exc).__name__)
                self._warned = True

    def close(self) -> None:
        """End-of-file for the guardian: with no child left listed, it just exits."""
        pipe, self.pipe = self.pipe, -1
        if pipe >= 0:  # idempotent: a second os.close could hit a reused descriptor
            os.close(pipe)


@asynccontextmanager
async def open_local_launcher(
    records: ProcessRecords | None = None,
) -> AsyncIterator[LocalLauncher]:
    """A launcher whose children are all killed and reaped when the context exits."""
    async with trio.open_nursery() as nursery:
        launcher = LocalLauncher(nursery, records)
        # Many children mean many pipes and pidfds: lift our soft limit to the hard one
        # (children inherit it, as they do from container engines).
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        await nursery.start(launcher.serve_guardian)
        try:
            yield launcher
        finally:
            with trio.CancelScope(shield=True):
                await launcher.close()
            nursery.cancel_scope.cancel()


def _spawn_error(argv: Sequence[str], cwd: Path | None, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and cwd is not None and exc.filename == str(cwd):
        return f"working directory {str(cwd)!r} does not exist"
    if exc.errno == errno.ENOENT:
        return f"command not found: {argv[0]!r}"
    if exc.errno == errno.EACCES:
        return f"permission denied executing {argv[0]!r}"
    return f"cannot execute {argv[0]!r}: {exc.strerror or exc}"
