"""A launched server's output: kept and relayed with secrets redacted, and watched.

The output is the only word a local server gives on how its start went: the line
`Server started on port N` says it serves, a `BindException` that someone took its port
(the caller then retries on another one), and the last few lines say why it died. Every
line is redacted before anything else sees it, so no key reaches the daemon's log or the
resource's output files (`supervisor logs`; tests/faults/test_secrets.py greps both).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from typing import Protocol

import structlog
import trio

from supervisor.launchers.local import ProcessHandle

STARTED = re.compile(r"Server started on port (\d+)")
_BIND_FAILED = ("Address already in use", "BindException")
REDACTED = "[REDACTED]"
_TAIL = 5  # lines of output quoted when a server fails to start


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


class LineKeeper(Protocol):
    """Where a resource's output lines are kept (an `OutputLog`)."""

    def line(self, stream: str, line: str) -> None: ...


class ServerOutput:
    """Keeps or relays a server's output (redacted); notices start-up and bind failures."""

    def __init__(
        self,
        redact: Redactor,
        log: structlog.typing.FilteringBoundLogger | None,
        keep: LineKeeper | None = None,
    ) -> None:
        self.started = trio.Event()
        self.bind_failed = False
        self._redact = redact
        self._log = log
        self._keep = keep
        self._tail: deque[str] = deque(maxlen=_TAIL)

    def line(self, stream: str, line: str) -> None:
        line = self._redact(line)
        if self._keep is not None:
            self._keep.line(stream, line)
        if self._log is not None:
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
