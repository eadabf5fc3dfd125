"""How a Deephaven server is launched as a local child: its command, ports, PSK and output.

Why it is built this way:
- The server runs `deephaven_server.Server` from a tiny inline script rather than the
  `deephaven server` CLI, which reads stdin and opens a browser. The script needs only
  the `deephaven-server` package, so any venv that has it (`python_venv`) can run it.
- The PSK reaches the server through an environment variable that the script removes
  before the JVM starts in-process, so it is in no command line (`ps` shows argv to every
  user) and the JVM's own properties are not visible from outside.
- The server binds the configured host (127.0.0.1 by default), not every interface.
- `port = "auto"` picks a free port by binding port 0; another process can take it before
  the server binds it, so a bind failure is expected and the caller retries on a new port.
"""

from __future__ import annotations

import importlib.util
import os
import re
import secrets
import shutil
import socket
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import trio

from supervisor.launchers.local import ProcessHandle

PSK_ENV = "SUPERVISOR_DEEPHAVEN_PSK"
ANONYMOUS_HANDLER = "io.deephaven.auth.AnonymousAuthenticationHandler"
STARTED = re.compile(r"Server started on port (\d+)")
_BIND_FAILED = ("Address already in use", "BindException")
REDACTED = "[REDACTED]"
_TAIL = 5  # lines of output quoted when a server fails to start

# argv: host, port, jvm args...; stays alive until signalled (the JVM runs with -Xrs, so
# SIGTERM ends the process at once and takes the in-process JVM with it).
SERVER_SCRIPT = """\
import os, sys, threading
args = sys.argv[3:]
psk = os.environ.pop("SUPERVISOR_DEEPHAVEN_PSK", "")
if psk:
    args.append("-Dauthentication.psk=" + psk)
from deephaven_server import Server
Server(host=sys.argv[1], port=int(sys.argv[2]), jvm_args=args).start()
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

    def argv(self) -> list[str]:
        args = list(self.jvm_args)
        if self.heap_mb is not None:
            args.insert(0, f"-Xmx{self.heap_mb}m")
        if self.psk is None:
            args.append(f"-DAuthHandlers={ANONYMOUS_HANDLER}")
        return [self.python, "-c", SERVER_SCRIPT, self.host, str(self.port), *args]

    def environment(self, base: Mapping[str, str]) -> dict[str, str]:
        env = {**base, **self.env}
        env.pop(PSK_ENV, None)
        if self.psk is not None:
            env[PSK_ENV] = self.psk
        return env


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


def is_bind_failure(line: str) -> bool:
    return any(marker in line for marker in _BIND_FAILED)


def started_port(line: str) -> int | None:
    """The port of a `Server started on port N` line, else None."""
    match = STARTED.search(line)
    return int(match.group(1)) if match else None


class Redactor:
    """Replaces every secret in a line before it is logged."""

    def __init__(self, secrets_: Iterable[str | None] = ()) -> None:
        self._secrets = sorted({s for s in secrets_ if s}, key=len, reverse=True)

    def __call__(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, REDACTED)
        return line


class ServerOutput:
    """Relays a server's output (redacted) and notices start-up and bind failures."""

    def __init__(self, redact: Redactor, log: structlog.typing.FilteringBoundLogger) -> None:
        self.started = trio.Event()
        self.bind_failed = False
        self._redact = redact
        self._log = log
        self._tail: deque[str] = deque(maxlen=_TAIL)

    def line(self, stream: str, line: str) -> None:
        line = self._redact(line)
        self._log.info("output", stream=stream, line=line)
        if line.strip() and not line.startswith(("\tat ", "\t...")):
            self._tail.append(line.strip())
        if is_bind_failure(line):
            self.bind_failed = True
        if started_port(line) is not None:
            self.started.set()

    def tail(self) -> str:
        return " | ".join(self._tail) or "no output"


async def wait_started(watch: ServerOutput, server: ProcessHandle) -> None:
    """Return once the server printed its start line, or exited."""
    async with trio.open_nursery() as nursery:

        async def started() -> None:
            await watch.started.wait()
            nursery.cancel_scope.cancel()

        async def exited() -> None:
            await server.exited.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(started)
        nursery.start_soon(exited)
