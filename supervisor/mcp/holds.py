"""The sandbox sessions one MCP session acquired: kept alive while it lives, released when
it ends.

An agent thinks for minutes between tool calls; a lease of 60 s would take its sandbox
away mid-thought. So while the MCP session is there (its stdio pipe open, its HTTP session
not idle past the lease) we heartbeat what it holds, at a third of each lease. When it
ends we release everything it held. If this process dies instead (SIGKILL), the
heartbeats stop and the daemon ends the sessions when their leases run out: a vanished
agent leaks nothing either way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from supervisor.errors import DaemonUnavailableError, RequestError
from supervisor.mcp.link import DaemonLink

log = structlog.get_logger("supervisor.mcp")

RELEASE_TIMEOUT = 10.0
MIN_INTERVAL = 1.0


@dataclass
class Holds:
    """Session ids held by one MCP session, with how often each needs a heartbeat."""

    link: DaemonLink
    _interval: dict[str, float] = field(default_factory=dict)
    _changed: trio.Event = field(default_factory=trio.Event)
    # What each held session's acquire answered (environment, connection): the Deephaven
    # tools list and describe the sessions this MCP session created from it.
    acquired: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def held(self) -> list[str]:
        return list(self._interval)

    def hold(self, session: dict[str, Any]) -> None:
        """Keep `session` (an acquire answer) alive until it is dropped or released."""
        lease_at = session.get("lease_expires_at")
        lease = float(lease_at) - time.time() if isinstance(lease_at, int | float) else None
        interval = max(MIN_INTERVAL, lease / 3) if lease is not None else None
        sid = str(session["session_id"])
        self._interval[sid] = interval if interval else float("inf")
        self.acquired[sid] = session
        self._changed.set()

    def drop(self, session_id: str) -> None:
        """Stop keeping `session_id` (released by the agent, or ended by the daemon)."""
        self._interval.pop(session_id, None)
        self.acquired.pop(session_id, None)

    async def keep(self) -> None:
        """Heartbeat every held session at its interval; runs until cancelled."""
        due: dict[str, float] = {}
        while True:
            now = trio.current_time()
            for sid, interval in list(self._interval.items()):
                due.setdefault(sid, now + interval)
                if due[sid] <= now:
                    due[sid] = now + interval
                    await self._heartbeat(sid)
            for sid in set(due) - set(self._interval):
                del due[sid]
            self._changed = trio.Event()
            with trio.move_on_at(min(due.values(), default=now + 3600.0)):
                await self._changed.wait()

    async def _heartbeat(self, session_id: str) -> None:
        try:
            await self.link.call(lambda c: c.heartbeat(session_id))
        except RequestError as exc:
            if exc.status in (404, 410):  # ended by the daemon (TTL) or released elsewhere
                self.drop(session_id)
            else:
                log.warning("mcp_heartbeat_failed", session=session_id, error=exc.message)
        except DaemonUnavailableError as exc:
            log.warning("mcp_heartbeat_failed", session=session_id, error=str(exc))

    async def release_all(self) -> int:
        """Release everything still held (shielded, bounded); returns how many were."""
        held = self.held
        self._interval.clear()
        self.acquired.clear()
        released = 0
        with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT):
            for sid in held:
                try:
                    await self.link.call(lambda c, sid=sid: c.release(sid))  # type: ignore[misc]
                    released += 1
                except (RequestError, DaemonUnavailableError) as exc:
                    log.warning("mcp_release_failed", session=sid, error=str(exc))
        if held:
            log.info("mcp_sessions_released", count=released, held=len(held))
        return released
