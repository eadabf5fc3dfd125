"""The agent: PID 1 of an isolated sandbox, which starts the commands the daemon asks for.

This file is the program itself: bubblewrap copies it into the sandbox (`/run/agent.py`)
and starts it with the system's Python (`python3 -I -S /run/agent.py FD SETTINGS`), so it imports
nothing but the standard library and never the `supervisor` package (which the sandbox
may not even see). It runs as the sandbox's uid, with no capabilities, like every command
it starts.

It reads requests from the daemon on `FD` (a SOCK_SEQPACKET socket: one JSON message per
packet, the command's stdout and stderr attached as file descriptors) and answers on it:
  spawn {id, argv, cwd, env} + (stdout, stderr[, stdin]) -> started {id} | failed {id, ...}
  signal {id, sig}     the command's process group (each command leads its own session)
  reset {}             kill every other process, empty the scratch dirs and IPC -> reset {}
  ping {id}            -> pong {id}
and, on its own, exited {id, status} (a Popen returncode: -N for signal N) for each one.

Why each choice:
- Forking here, inside the namespaces, is what makes each command inherit everything at
  once: the namespaces, the uid, the cgroup, no_new_privs and an empty capability set.
  Nothing has to be entered per exec (nsenter could not join the cgroup without a race).
- It is PID 1: a signal from inside the sandbox cannot kill it, orphans are reaped here,
  and when it dies the kernel kills everything in the sandbox. It is not dumpable, so
  the code it runs (same uid) cannot ptrace it, nor open its /proc files.
- The daemon trusts nothing it says beyond the exit status of a command: pids never
  leave the sandbox, and every host-side kill goes to the processes the daemon spawned.
- It sets no rlimit, on itself or on what it starts: the daemon's argv begins with
  `prlimit ... --` as it does for an unisolated sandbox, so the limits are in force
  before the command's first instruction (setting them after the spawn would race with
  it, and setting them on the agent would bind its own long life: a CPU-time limit, say).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any

PR_SET_DUMPABLE = 4
IPC_RMID = 0
MAX_MESSAGE = 1 << 20


class Agent:
    def __init__(self, ctl: socket.socket, settings: dict[str, object]) -> None:
        self.ctl = ctl
        clean = settings.get("clean", [])
        assert isinstance(clean, list)
        self.clean = [str(path) for path in clean]
        self.children: dict[int, tuple[int, subprocess.Popen[bytes]]] = {}  # pid -> id

    def send(self, message: dict[str, object]) -> None:
        self.ctl.send(json.dumps(message).encode())

    def spawn(self, request: dict[str, object], fds: list[int]) -> None:
        ident = request["id"]
        try:
            if len(fds) not in (2, 3):
                raise ValueError("spawn needs stdout and stderr (and maybe stdin)")
            argv = request["argv"]
            env = request["env"]
            assert isinstance(argv, list)
            assert isinstance(env, dict)
            child = subprocess.Popen(  # vfork + exec: no Python code runs in the child
                argv,
                cwd=str(request["cwd"]),
                env=env,
                stdin=fds[2] if len(fds) == 3 else subprocess.DEVNULL,
                stdout=fds[0],
                stderr=fds[1],
                start_new_session=True,
            )
        except (OSError, ValueError, TypeError) as exc:
            errno_ = exc.errno if isinstance(exc, OSError) else 0
            filename = getattr(exc, "filename", None)
            if isinstance(exc, OSError) and filename == request.get("cwd"):
                exc = ValueError(f"working directory {filename}: {exc.strerror}")
                errno_, filename = 0, None
            self.send(
                {
                    "op": "failed",
                    "id": ident,
                    "errno": errno_ or 0,
                    "error": exc.strerror if isinstance(exc, OSError) else str(exc),
                    "filename": filename if isinstance(filename, str) else None,
                }
            )
            return
        finally:
            for fd in fds:
                os.close(fd)
        assert isinstance(ident, int)
        self.children[child.pid] = (ident, child)
        self.send({"op": "started", "id": ident})

    def signal(self, request: dict[str, object]) -> None:
        for pid, (ident, _) in self.children.items():
            if ident == request["id"]:
                sig = request.get("sig", signal.SIGKILL)
                assert isinstance(sig, int)
                with contextlib.suppress(OSError):
                    os.killpg(pid, sig)

    def reap(self) -> None:
        """Collect every exit (orphans too: we are PID 1) and report our commands'."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.exited(pid, status)

    def exited(self, pid: int, status: int) -> None:
        entry = self.children.pop(pid, None)
        if entry is None:
            return
        ident, child = entry
        child.returncode = code = os.waitstatus_to_exitcode(status)
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)  # what the command left in its group
        self.send({"op": "exited", "id": ident, "status": code})

    def reset(self) -> None:
        """Back to a fresh sandbox: no process but us, empty scratch dirs, no IPC objects."""
        with contextlib.suppress(ProcessLookupError):  # there was none
            os.kill(-1, signal.SIGKILL)  # from PID 1: every other process of the namespace
        while True:
            try:
                pid, status = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.exited(pid, status)
        for directory in self.clean:
            try:
                entries = os.listdir(directory)
            except OSError:
                continue
            for name in entries:
                path = os.path.join(directory, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
        remove_ipc()
        self.send({"op": "reset"})

    def handle(self) -> bool:
        try:
            message, fds, _, _ = socket.recv_fds(self.ctl, MAX_MESSAGE, 4)
        except OSError:
            return False
        if not message:
            return False  # the daemon is gone: so is the sandbox
        request = json.loads(message)
        op = request.get("op")
        if op == "spawn":
            self.spawn(request, fds)
            return True
        for fd in fds:
            os.close(fd)
        if op == "signal":
            self.signal(request)
        elif op == "reset":
            self.reset()
        elif op == "ping":
            self.send({"op": "pong", "id": request.get("id")})
        return True

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        selector = selectors.DefaultSelector()
        selector.register(self.ctl, selectors.EVENT_READ, "ctl")
        selector.register(wake_r, selectors.EVENT_READ, "chld")
        self.send({"op": "ready"})
        while True:
            for key, _ in selector.select():
                if key.data == "chld":
                    while True:
                        try:
                            if not os.read(wake_r, 4096):
                                break
                        except BlockingIOError:
                            break
                    self.reap()
                elif not self.handle():
                    return
            self.reap()


def remove_ipc() -> None:
    """Remove the SysV IPC objects of this IPC namespace (the previous session's)."""
    libc: Any = ctypes.CDLL(None, use_errno=True)
    removers: dict[str, Callable[[int], object]] = {
        "shm": lambda ident: libc.shmctl(ident, IPC_RMID, None),
        "sem": lambda ident: libc.semctl(ident, 0, IPC_RMID),
        "msg": lambda ident: libc.msgctl(ident, IPC_RMID, None),
    }
    for table, remove in removers.items():
        try:
            with open(f"/proc/sysvipc/{table}") as listing:
                rows = listing.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 1:
                remove(int(fields[1]))


def main() -> None:
    ctl = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(ctl.fileno(), False)
    libc: Any = ctypes.CDLL(None)
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    Agent(ctl, json.loads(sys.argv[2])).serve()


if __name__ == "__main__":
    main()
