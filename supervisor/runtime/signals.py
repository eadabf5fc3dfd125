"""Signals to a running daemon: SIGTERM and SIGINT stop it (a second SIGINT forces),
SIGHUP reloads its config, SIGUSR1 logs the status of everything it runs."""

from __future__ import annotations

import signal
from typing import Protocol

import structlog
import trio

log = structlog.get_logger("supervisor.daemon")


class Signalled(Protocol):
    """What a signal can ask of the daemon."""

    @property
    def stop_requested(self) -> bool: ...
    def request_stop(self, *, force: bool = False) -> None: ...
    def request_reload(self) -> None: ...
    def dump_state(self) -> None: ...


async def serve_signals(target: Signalled) -> None:
    """Turn signals into requests to `target` until cancelled."""
    with trio.open_signal_receiver(
        signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1
    ) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                force = target.stop_requested and signum == signal.SIGINT
                log.info("signal_received", signal=name, action="force stop" if force else "stop")
                target.request_stop(force=force)
            elif signum == signal.SIGHUP:
                log.info("signal_received", signal=name, action="reload")
                target.request_reload()
            else:
                target.dump_state()
