"""A Deephaven server as a local child: its command, its port, and its PSK handover.

Why it is built this way:
- The server runs `deephaven_server.Server` from a tiny inline script rather than the
  `deephaven server` CLI, which reads stdin and opens a browser. The script needs only
  the `deephaven-server` package, so any venv that has it (`python_venv`) can run it.
- The PSK never rides in argv (`ps` shows it to every user) or the environment
  (/proc/PID/environ keeps the initial environment for the process's whole life, whatever
  the child unsets). The launcher spawns with stdin on /dev/null and closes every other
  descriptor (no `pass_fds`), so the key goes the way the client helpers get theirs: over
  a private unix socket, in a 0700 directory, that only the spawned child (checked by
  SO_PEERCRED) may use once. The script reads it before the JVM starts in-process and
  hands it over as a JVM option through JNI, which puts it in no command line either.
  A container cannot be reached that way: `container` writes a `deephaven.prop` instead.
- The server binds the configured host (127.0.0.1 by default), not every interface.
- `port = "auto"` picks a free port by binding port 0; another process can take it before
  the server binds it, so a bind failure is expected and the caller retries on a new port.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import struct
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from supervisor.errors import StartError
from supervisor.launchers.local import LocalLauncher, ProcessHandle
from supervisor.launchers.relay import LineSink

# The variable older releases passed the PSK in; one inherited from the daemon is dropped.
PSK_ENV = "SUPERVISOR_DEEPHAVEN_PSK"
ANONYMOUS_HANDLER = "io.deephaven.auth.AnonymousAuthenticationHandler"
# The script collects its key before it imports anything heavy; the bound is for a loaded
# machine, not for the usual few tens of milliseconds.
KEY_TIMEOUT = 30.0

# argv: key socket ("" without a PSK), host, port, jvm args...; stays alive until
# signalled (the JVM runs with -Xrs, so SIGTERM ends the process, in-process JVM and all).
SERVER_SCRIPT = """\
import socket, sys, threading
key_socket, host, port, *args = sys.argv[1:]
if key_socket:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(key_socket)
        key = b"".join(iter(lambda: s.recv(4096), b"")).decode()
    args.append("-Dauthentication.psk=" + key)
from deephaven_server import Server
Server(host=host, port=int(port), jvm_args=args).start()
threading.Event().wait()
"""


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """Everything needed to start one local Deephaven server."""

    host: str
    port: int
    psk: str | None = field(repr=False)  # None: anonymous
    heap_mb: int | None = None
    jvm_args: tuple[str, ...] = ()
    python: str = sys.executable
    env: Mapping[str, str] = field(default_factory=dict)

    def argv(self, key_socket: str = "") -> list[str]:
        """The command; `key_socket` is where the script collects the PSK (see `spawn_server`)."""
        args = list(self.jvm_args)
        if self.heap_mb is not None:
            args.insert(0, f"-Xmx{self.heap_mb}m")
        if self.psk is None:
            args.append(f"-DAuthHandlers={ANONYMOUS_HANDLER}")
        return [self.python, "-c", SERVER_SCRIPT, key_socket, self.host, str(self.port), *args]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        """`base` with the spec's own variables; never a key (see the module docstring)."""
        env = {**base, **self.env}
        env.pop(PSK_ENV, None)
        return env


async def spawn_server(
    launcher: LocalLauncher,
    spec: ServerSpec,
    *,
    env: Mapping[str, str],
    on_output: LineSink,
    record_as: str | None = None,
    timeout: float = KEY_TIMEOUT,
) -> ProcessHandle:
    """Spawn the server of `spec` and hand it its PSK over a private socket.

    A server that exits before it collects its key is returned as it is: its exit and
    output tell why (`wait_started`).

    Raises:
        StartError: the command could not be run, or the key was not collected in time.
    """
    if spec.psk is None:
        return await launcher.spawn(
            spec.argv(), env=spec.environment(env), on_output=on_output, record_as=record_as
        )
    tmpdir = tempfile.mkdtemp(prefix="supervisor-dh-")  # 0700: nobody else can connect
    path = os.path.join(tmpdir, "key.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await listener.bind(path)
        listener.listen(1)
        server = await launcher.spawn(
            spec.argv(path), env=spec.environment(env), on_output=on_output, record_as=record_as
        )
        try:
            sock = await accept_from(listener, server, timeout)
            if sock is None and not server.exited.is_set():
                raise StartError(f"the server did not collect its key within {timeout:g}s")
            if sock is not None:
                async with trio.SocketStream(sock) as stream:
                    await stream.send_all(spec.psk.encode())  # then end-of-file: that is all
        except BaseException:
            server.kill()
            raise
    finally:
        listener.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return server


async def accept_from(
    listener: trio.socket.SocketType, process: ProcessHandle, timeout: float
) -> trio.socket.SocketType | None:
    """The connection `process` made to `listener`, or None if it exited or timed out first.

    Raises:
        StartError: someone other than `process` connected (the directory is private:
            this is belt and braces).
    """
    accepted: list[trio.socket.SocketType] = []
    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                sock, _ = await listener.accept()
                accepted.append(sock)
                nursery.cancel_scope.cancel()

            async def exited() -> None:
                await process.exited.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(accept)
            nursery.start_soon(exited)
    if not accepted:
        return None
    sock = accepted[0]
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid = struct.unpack("3i", creds)[0]
    if pid != process.pid:
        sock.close()
        raise StartError(f"unexpected peer pid {pid} on a private socket")
    return sock


def python_for(venv: Path | None) -> str:
    """The interpreter of `venv`, or the daemon's own."""
    return sys.executable if venv is None else str(venv / "bin" / "python")


def python_launch_problem(python: str, env: Mapping[str, str]) -> str | None:
    """Why a python launch cannot work on this machine (no Java, no package), or None."""
    java_home = env.get("JAVA_HOME") or os.environ.get("JAVA_HOME")
    has_java = (java_home is not None and Path(java_home, "bin", "java").exists()) or (
        shutil.which("java") is not None
    )
    if not has_java:
        return (
            'launch = "python" needs Java 17: no java on PATH and JAVA_HOME is unset '
            '(install openjdk-17-jre-headless, or use launch = "docker")'
        )
    if not Path(python).exists():
        return f"python_venv: {python} does not exist"
    if python == sys.executable and importlib.util.find_spec("deephaven_server") is None:
        return (
            "the deephaven-server package is not installed in the daemon's environment "
            "(pip install 'supervisor-daemon[deephaven]', or set python_venv)"
        )
    return None


def pick_free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on at this instant (it may be taken before it is used)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def generate_psk() -> str:
    """A new pre-shared key: 32 hex characters."""
    return secrets.token_hex(16)
