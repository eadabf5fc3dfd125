"""Local processes: spawned in their own session, tied to the daemon's life, reaped by pidfd.

Why it is built this way:
- The parent-death signal (PR_SET_PDEATHSIG) is armed by exec'ing the command through
  util-linux's `setpriv --pdeathsig KILL`, so CPython can vfork (0.15 ms) instead of
  fully forking a 50 MB daemon to run a pre-exec hook (3 ms): that was most of the
  restart latency. The signal fires when the *thread* that forked the child exits, so
  children are forked from the main thread (alive as long as the daemon) or, on the slow
  paths (no setpriv, or a user switch), from one long-lived thread owned by the
  launcher; never from trio's worker threads, which retire after a few idle seconds.
- Every child leads its own session and process group, so a stop reaches its whole tree;
  when the leader exits, whatever is left of its group is killed too: nothing leaks.
- Exits are awaited on a pidfd (no polling, no thread per child), and each child's output
  is read continuously so a chatty child never blocks on a full pipe.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import grp
import os
import pwd
import queue
import resource
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import outcome
import structlog
import trio

from supervisor.errors import MisconfiguredError, StartError
from supervisor.supervision.policy import Termination, describe_exit

log = structlog.get_logger("supervisor.launcher")

# Variables systemd hands to *us*; a child that saw them would talk to systemd as if it
# were the service (a stray READY=1 or WATCHDOG=1 from a child would lie about the daemon).
SCRUBBED_ENV = frozenset(
    {"NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}
)
MAX_LINE = 8192
_PR_SET_PDEATHSIG = 1

LineSink = Callable[[str, str], None]  # (stream name, line)


def scrubbed_environment(
    extra: Mapping[str, str] = {}, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The daemon's environment without systemd's per-service variables, plus `extra`."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in SCRUBBED_ENV}
    env.update(extra)
    return env


@dataclass(frozen=True, slots=True)
class Credentials:
    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None


NO_CREDENTIALS = Credentials(None, None, None)


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

    def __init__(self, popen: subprocess.Popen[bytes], stop_signal: int) -> None:
        self.popen = popen
        self.stop_signal = stop_signal
        self.started_at = trio.current_time()
        self.termination: Termination | None = None
        self.exited = trio.Event()
        self.output_done = trio.Event()  # every line the child wrote has been relayed

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

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._fork_loop, name="supervisor-spawner", daemon=True
        )
        self._children: dict[int, ProcessHandle] = {}
        self._nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
        self._shim: str | None = None  # setpriv, when it can arm the parent-death signal

    def _child_setup(self) -> Callable[[], None]:
        """The slow path's pre-exec hook (a full fork: ~3 ms for a 50 MB daemon)."""
        parent = os.getpid()
        libc = ctypes.CDLL(None, use_errno=True)

        def child_setup() -> None:  # runs in the child between fork and exec
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the daemon died before prctl took effect
                os._exit(1)

        return child_setup

    @property
    def children(self) -> Mapping[int, ProcessHandle]:
        return self._children

    def _fork_loop(self) -> None:
        while (job := self._jobs.get()) is not None:
            job()

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        credentials: Credentials = NO_CREDENTIALS,
        stop_signal: int = signal.SIGTERM,
        on_output: LineSink | None = None,
    ) -> ProcessHandle:
        """Start `argv` in its own session; `on_output` receives its lines (else discarded).

        Raises:
            StartError: the command could not be executed.
        """
        out_r = err_r = None
        stdout: int = subprocess.DEVNULL
        stderr: int = subprocess.DEVNULL
        if on_output is not None:
            out_r, stdout = os.pipe()
            err_r, stderr = os.pipe()
        if self._shim is not None:
            # Fast path: vfork + exec of setpriv, which arms the parent-death signal and
            # execs the command. Popen cannot tell us the command is missing any more
            # (setpriv would exit 127), so check first.
            _check_executable(argv[0], cwd, env)
            args = [self._shim, "--pdeathsig", "KILL", "--", *argv]
            setup = None
        else:
            args, setup = list(argv), self._child_setup()

        def fork() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                args,
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
                preexec_fn=setup,  # noqa: PLW1509 - see module docstring: one forking thread
                user=credentials.uid,
                group=credentials.gid,
                extra_groups=credentials.groups,
            )

        result: outcome.Outcome[subprocess.Popen[bytes]]
        try:
            if setup is None and credentials == NO_CREDENTIALS and _on_main_thread():
                # vfork + exec returns in ~0.15 ms: cheaper than a thread hand-off, and the
                # main thread lives as long as the daemon, as the parent-death signal needs.
                # (Switching users may make CPython fall back to a full fork: thread then.)
                result = outcome.capture(fork)
                await trio.lowlevel.cancel_shielded_checkpoint()  # a cancel must not orphan it
            else:
                result = await self._in_fork_thread(fork)
        finally:
            for fd in (stdout, stderr):
                if fd >= 0:
                    os.close(fd)
        try:
            popen = result.unwrap()
        except OSError as exc:
            for read_end in (out_r, err_r):
                if read_end is not None:
                    os.close(read_end)
            raise StartError(_spawn_error(argv, cwd, exc)) from None
        handle = ProcessHandle(popen, stop_signal)
        self._children[popen.pid] = handle
        pidfd = os.pidfd_open(popen.pid)
        self._nursery.start_soon(self._reap, handle, pidfd)
        if on_output is not None:
            assert out_r is not None
            assert err_r is not None
            self._nursery.start_soon(_relay_both, handle, out_r, err_r, on_output)
        else:
            handle.output_done.set()
        return handle

    async def _in_fork_thread(
        self, fn: Callable[[], subprocess.Popen[bytes]]
    ) -> outcome.Outcome[subprocess.Popen[bytes]]:
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[outcome.Outcome[subprocess.Popen[bytes]]] = []

        def job() -> None:
            box.append(outcome.capture(fn))
            with contextlib.suppress(trio.RunFinishedError):  # the daemon is already gone
                token.run_sync_soon(done.set)

        self._jobs.put(job)
        # Shielded: a fork is quick and must not be abandoned, or its child would leak.
        with trio.CancelScope(shield=True):
            await done.wait()
        return box[0]

    async def _reap(self, handle: ProcessHandle, pidfd: int) -> None:
        try:
            await trio.lowlevel.wait_readable(pidfd)
        finally:
            trio.lowlevel.notify_closing(pidfd)
            os.close(pidfd)
        returncode = handle.popen.poll()
        if returncode is None:  # pragma: no cover - pidfd readable means it exited
            returncode = handle.popen.wait()
        handle.signal_group(signal.SIGKILL)  # whatever the leader left in its group
        handle.termination = describe_exit(returncode)
        self._children.pop(handle.pid, None)
        handle.exited.set()

    async def kill_all(self, timeout: float = 5.0) -> None:
        """SIGKILL every child still alive and wait (bounded) for them to be reaped."""
        children = list(self._children.values())
        for child in children:
            child.kill()
        with trio.move_on_after(timeout):
            for child in children:
                await child.exited.wait()

    def close(self) -> None:
        self._jobs.put(None)


@asynccontextmanager
async def open_local_launcher() -> AsyncIterator[LocalLauncher]:
    """A launcher whose children are all killed and reaped when the context exits."""
    async with trio.open_nursery() as nursery:
        launcher = LocalLauncher(nursery)
        # Many children mean many pipes and pidfds: lift our soft limit to the hard one
        # (children inherit it, as they do from container engines).
        soft, hard = launcher._nofile
        if soft != hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        launcher._thread.start()
        launcher._shim = await _find_pdeathsig_shim()
        try:
            yield launcher
        finally:
            with trio.CancelScope(shield=True):
                await launcher.kill_all()
            nursery.cancel_scope.cancel()
            launcher.close()


async def _relay_both(handle: ProcessHandle, out_fd: int, err_fd: int, sink: LineSink) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_relay, trio.lowlevel.FdStream(out_fd), "stdout", sink)
            nursery.start_soon(_relay, trio.lowlevel.FdStream(err_fd), "stderr", sink)
    finally:
        handle.output_done.set()


async def _relay(stream: trio.lowlevel.FdStream, name: str, sink: LineSink) -> None:
    """Forward complete lines to `sink`; cut lines longer than MAX_LINE."""
    pending = b""
    skipping = False
    async with stream:
        while True:
            try:
                chunk = await stream.receive_some(65536)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if skipping:
                    skipping = False
                    continue
                _emit(sink, name, line[:MAX_LINE], truncated=len(line) > MAX_LINE)
            if len(pending) > MAX_LINE:
                if not skipping:
                    _emit(sink, name, pending[:MAX_LINE], truncated=True)
                    skipping = True
                pending = b""
    if pending and not skipping:
        _emit(sink, name, pending[:MAX_LINE], truncated=len(pending) > MAX_LINE)


def _emit(sink: LineSink, name: str, line: bytes, *, truncated: bool = False) -> None:
    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
    try:
        sink(name, text + (" [truncated]" if truncated else ""))
    except Exception:
        log.exception("output_sink_failed")


async def _find_pdeathsig_shim() -> str | None:
    """setpriv (util-linux) if it can arm the parent-death signal here, else None."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    result = await trio.run_process(
        [setpriv, "--pdeathsig", "KILL", "--", "true"],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        log.warning("pdeathsig_shim_unusable", path=setpriv, detail="falling back to a slower fork")
        return None
    return setpriv


def _check_executable(command: str, cwd: Path | None, env: Mapping[str, str] | None) -> None:
    """Raise StartError as Popen would for a command or cwd that cannot be executed."""
    if cwd is not None and not os.path.isdir(cwd):
        raise StartError(f"working directory {str(cwd)!r} does not exist")
    if "/" in command:
        path = command if os.path.isabs(command) or cwd is None else os.path.join(cwd, command)
        if not os.path.exists(path):
            raise StartError(f"command not found: {command!r}")
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            raise StartError(f"permission denied executing {command!r}")
        return
    search = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(command, path=search) is None:
        raise StartError(f"command not found: {command!r}")


def _spawn_error(argv: Sequence[str], cwd: Path | None, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and cwd is not None and exc.filename == str(cwd):
        return f"working directory {str(cwd)!r} does not exist"
    if exc.errno == errno.ENOENT:
        return f"command not found: {argv[0]!r}"
    if exc.errno == errno.EACCES:
        return f"permission denied executing {argv[0]!r}"
    return f"cannot execute {argv[0]!r}: {exc.strerror or exc}"


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()
