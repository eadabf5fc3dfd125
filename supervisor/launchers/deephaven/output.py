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


class StreamRedactor:
    """Replaces every secret in a byte stream read in pieces (a container's log stream),
    where a piece may end inside a secret: what could be a secret's beginning is held back
    until the next piece (or `flush`) shows it is not, so output is delayed by at most
    a secret's length, and only when its end looks like a secret's start."""

    def __init__(self, secrets_: Iterable[str | None] = ()) -> None:
        found = {_as_bytes(s) for s in secrets_ if s}
        self._secrets = sorted(found, key=len, reverse=True)
        self._held = b""

    def feed(self, piece: bytes) -> bytes:
        """What of the stream so far can be passed on, redacted."""
        data = self._held + piece
        for secret in self._secrets:
            data = data.replace(secret, REDACTED.encode())
        keep = self._possible_start(data)
        self._held = data[len(data) - keep :] if keep else b""
        return data[: len(data) - keep]

    def flush(self) -> bytes:
        """The end of the stream: what was held back (no whole secret, so as it is)."""
        held, self._held = self._held, b""
        return held

    def _possible_start(self, data: bytes) -> int:
        """The length of the longest end of `data` that some secret begins with."""
        longest = max((len(secret) for secret in self._secrets), default=1)
        for size in range(min(longest - 1, len(data)), 0, -1):
            end = data[-size:]
            if any(secret.startswith(end) for secret in self._secrets):
                return size
        return 0


def _as_bytes(secret: str) -> bytes:
    """A secret as a program prints it (one from the environment may hold the
    surrogates that stand for bytes that are not UTF-8)."""
    try:
        return secret.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return secret.encode("utf-8", "surrogatepass")


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
