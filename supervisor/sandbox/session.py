"""Sessions: one client's leased use of one sandbox, from acquire to release.

A session knows its sandbox only through `SessionSandbox`, what the session and the code
holding it (leases, the API) use of it, so this module stays below `sandbox`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from supervisor.errors import SandboxStateError, SessionExpiredError
from supervisor.sandbox.instance import PLAIN, ExecOptions

if TYPE_CHECKING:
    from supervisor.sandbox.files import Download, Listing
    from supervisor.sandbox.instance import ExecResult, Instance

T = TypeVar("T")


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
    async def client_work(
        self,
        session: Session,
        name: str,
        args: Mapping[str, Any],
        work: Callable[[Instance], Awaitable[T]],
    ) -> T: ...
    def connection(self) -> dict[str, Any]: ...
    async def end_session(self, *, expired: bool = False, reason: str = "") -> None: ...
    def record(self, error: BaseException) -> None: ...


def new_session_id(hint: str) -> str:
    """`<hint>-session-<12 hex>`: 48 random bits, so ids do not repeat within a lifetime."""
    return f"{hint}-session-{secrets.token_hex(6)}"


class Session:
    """A sandbox held by one client, with an absolute TTL and an optional heartbeat lease.

    Work in progress holds the lease: while a command runs the session cannot expire for
    want of a heartbeat (only its TTL ends it), and when the last one finishes the lease
    starts again from then. Times are on trio's clock.
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
        self.changed = trio.Event()  # set (and renewed) when it ends or its deadline moves
        self.acquire_wait = 0.0
        self.busy = 0

    @property
    def deadline(self) -> float:
        """When the daemon ends this session unless a heartbeat moves the lease."""
        if self.busy:
            return self.expires_at
        return min(self.expires_at, self.lease_expires_at)

    @contextmanager
    def holding(self, hold: bool = True) -> Iterator[None]:
        """Hold the lease for the work in this block; renew it when the block ends."""
        if not hold:
            yield
            return
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            if not self.busy and self.lease is not None and not self.ended:
                self.lease_expires_at = min(trio.current_time() + self.lease, self.expires_at)
                self._moved()

    def end(self, reason: str, *, expired: bool = False) -> None:
        """Mark the session over (the sandbox calls this as it ends the session)."""
        self.ended, self.expired, self.end_reason = True, expired, reason
        self.ended_event.set()
        self._moved()

    def _moved(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

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
        with self.holding(not options.background):
            return await self.sandbox.exec(self, argv, timeout=timeout, options=options)

    async def run_script(
        self, script: str, *, timeout: float | None = None, options: ExecOptions = PLAIN
    ) -> ExecResult:
        """Run a script in the sandbox (sh, or Python in a Deephaven server)."""
        self._require_live()
        with self.holding(not options.background):
            return await self.sandbox.run_script(self, script, timeout=timeout, options=options)

    async def put_files(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        """Write a file as `dest`, or extract a tar under the directory `dest`."""
        self._require_live()
        with self.holding():
            await self.sandbox.client_work(
                self, "put_files", {"path": dest},
                lambda instance: instance.upload(dest, data, tar=tar, limit=limit),
            )  # fmt: skip

    async def get_files(self, path: str, *, limit: int) -> Download:
        """A file's bytes, or a directory's tar."""
        self._require_live()
        with self.holding():
            return await self.sandbox.client_work(
                self, "get_files", {"path": path}, lambda instance: instance.download(path, limit)
            )

    async def list_files(self, path: str) -> Listing:
        self._require_live()
        with self.holding():
            return await self.sandbox.client_work(
                self, "list_files", {"path": path}, lambda instance: instance.listdir(path)
            )

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
            "running": self.busy,
            "state": "ended" if self.ended else "active",
            "endpoint": self.endpoint(),
        }

    def endpoint(self) -> str | None:
        """`host:port` of a sandbox that is a server (Deephaven), never its secret."""
        try:
            where = self.sandbox.connection()
        except SandboxStateError:
            return None  # no instance right now: nothing to connect to
        if "host" in where and "port" in where:
            return f"{where['host']}:{where['port']}"
        return None
