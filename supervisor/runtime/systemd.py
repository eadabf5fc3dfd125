"""systemd integration: the sd_notify datagram protocol and the watchdog.

The protocol is a few `KEY=value` lines in one datagram to the AF_UNIX socket named by
$NOTIFY_SOCKET (a path, or `@name` for the abstract namespace); it is simple enough that
implementing it beats a dependency. Everything here is a no-op without NOTIFY_SOCKET, so
the daemon behaves the same outside systemd.

The watchdog is petted only while the daemon is demonstrably healthy: the event loop
wakes on time (low lag) and no supervisor is stuck past its own deadlines. A wedged
daemon stops petting, and systemd restarts it: that is the point of a watchdog.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import structlog
import trio

log = structlog.get_logger("supervisor.systemd")


class Notifier:
    """Sends sd_notify messages; silently does nothing when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if address.startswith("@"):
            self.address = "\0" + address[1:]
        elif address.startswith("/"):
            self.address = address
        self._sock: trio.socket.SocketType | None = None
        self._last_status = ""

    @property
    def enabled(self) -> bool:
        return self.address is not None

    async def send(self, **fields: str | int) -> None:
        """Send one message, e.g. `send(READY=1, STATUS="3 running")`; never raises."""
        if self.address is None:
            return
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = trio.socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
            await self._sock.sendto(message, self.address)
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc), message=message.decode())

    async def status(self, text: str) -> None:
        """STATUS=text, only when it changed."""
        if text != self._last_status:
            self._last_status = text
            await self.send(STATUS=text)

    async def reloading(self) -> None:
        """RELOADING=1 with the monotonic timestamp systemd 253+ requires (harmless before)."""
        await self.send(
            RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Seconds between WATCHDOG=1 pets (half of WATCHDOG_USEC), or None if not asked for."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(pid if pid is not None else os.getpid()):
        return None  # meant for another process (e.g. a wrapper that exec'ed us)
    return int(usec) / 1e6 / 2


async def serve_watchdog(
    notifier: Notifier,
    interval: float,
    healthy: Callable[[], str | None],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Pet the watchdog every `interval` seconds while `healthy()` returns None.

    `healthy` returns a reason when the daemon should not be trusted; the first refusal
    is logged, and petting resumes when the reason goes away.
    """
    task_status.started()
    refusing: str | None = None
    while True:
        reason = healthy()
        if reason is None:
            await notifier.send(WATCHDOG=1)
        if reason != refusing:
            if reason is not None:
                log.error("watchdog_withheld", reason=reason)
            else:
                log.info("watchdog_resumed")
            refusing = reason
        await trio.sleep(interval)


class Dirtied(Protocol):
    def add_listener(self, listener: Callable[[Any], None]) -> Callable[[], None]: ...


async def serve_status(notifier: Notifier, events: Dirtied, line: Callable[[], str]) -> None:
    """Keep systemd's STATUS= line current: after events, at most once a second."""
    dirty = trio.Event()

    def touched(_: Any) -> None:
        dirty.set()

    events.add_listener(touched)
    while True:
        await dirty.wait()
        dirty = trio.Event()
        await notifier.status(line())
        await trio.sleep(1.0)
