"""Sessions: one client's leased use of one sandbox, from acquire to release.

A session knows its sandbox only through `SessionSandbox`, what the session and the code
holding it (leases, the API) use of it, so this module stays below `sandbox`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from supervisor.errors import SessionExpiredError
from supervisor.sandbox.instance import PLAIN, ExecOptions

if TYPE_CHECKING:
    from supervisor.sandbox.instance import ExecResult


class SessionSandbox(Protocol):
    """The sandbox a session runs on (`supervisor.sandbox.sandbox.Sandbox`)."""

    @property
    def id(self) -> str: ...
    async def exec(
        self, session: Session, argv: Sequence[str], *, timeout: float | None, options: ExecOptions
    ) -> ExecResult: ...
    async def run_script(
        self, session: Session, script: str, *, timeout: float | None, options: ExecOptions
    ) -> ExecResult: ...
    def connection(self) -> dict[str, Any]: ...
    async def end_session(self, *, expired: bool = False, reason: str = "") -> None: ...
    def record(self, error: BaseException) -> None: ...


def new_session_id(hint: str) -> str:
    """`<hint>-session-<12 hex>`: 48 random bits, so ids do not repeat within a lifetime."""
    return f"{hint}-session-{secrets.token_hex(6)}"


class Session:
    """A sandbox held by one client, with an absolute TTL and an optional heartbeat lease.

    Times are on trio's clock; `*_wall` variants are Unix times for the API.
    """

    def __init__(
        self,
        session_id: str,
        sandbox: SessionSandbox,
        *,
        environment: str,
        ttl: float,
        lease: float | None,
        labels: Mapping[str, str] | None = None,
    ) -> None:
        now = trio.current_time()
        self.id = session_id
        self.sandbox = sandbox
        self.environment = environment
        self.labels = dict(labels or {})
        self.started_at = now
        self.expires_at = now + ttl
        self.lease = lease
        self.lease_expires_at = math.inf if lease is None else min(now + lease, self.expires_at)
        self.ended = False
        self.end_reason = ""
        self.expired = False
        self.ended_event = trio.Event()
        self.acquire_wait = 0.0

    @property
    def deadline(self) -> float:
        """When the daemon ends this session unless a heartbeat moves the lease."""
        return min(self.expires_at, self.lease_expires_at)

    def heartbeat(self) -> None:
        """Extend the lease (never past the TTL)."""
        self._require_live()
        if self.lease is not None:
            self.lease_expires_at = min(trio.current_time() + self.lease, self.expires_at)

    def _require_live(self) -> None:
        if self.expired:
            raise SessionExpiredError(f"session {self.id} expired and was ended by the daemon")
        if self.ended:
            raise SessionExpiredError(f"session {self.id} has ended ({self.end_reason})")

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        options: ExecOptions = PLAIN,
    ) -> ExecResult:
        """Run `argv` in the session's sandbox (`env` is short for `options.env`)."""
        self._require_live()
        if env is not None:
            options = dataclasses.replace(options, env=env)
        return await self.sandbox.exec(self, argv, timeout=timeout, options=options)

    async def run_script(
        self, script: str, *, timeout: float | None = None, options: ExecOptions = PLAIN
    ) -> ExecResult:
        """Run a script in the sandbox (sh, or Python in a Deephaven server)."""
        self._require_live()
        return await self.sandbox.run_script(self, script, timeout=timeout, options=options)

    def connection(self) -> dict[str, Any]:
        """What the client needs to use the sandbox directly."""
        return self.sandbox.connection()

    def to_json(self) -> dict[str, Any]:
        offset = time.time() - trio.current_time()
        return {
            "session_id": self.id,
            "sandbox_id": self.sandbox.id,
            "environment": self.environment,
            "started_at": round(self.started_at + offset, 3),
            "expires_at": round(self.expires_at + offset, 3),
            "lease_expires_at": (
                None if self.lease is None else round(self.lease_expires_at + offset, 3)
            ),
            "labels": self.labels,
            "state": "ended" if self.ended else "active",
        }
