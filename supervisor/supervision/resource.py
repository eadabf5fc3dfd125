"""What the supervisor needs from a resource kind: start, wait, check, stop.

Each kind (process, container, Deephaven server or session) implements `Resource`; the
supervisor owns every decision about *when* (timeouts, retries, backoff, intensity) and
the resource only knows *how*.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from supervisor.errors import (
    MisconfiguredError,
    NoCredentialsError,
    NoOutputError,
    UnauthorizedError,
)
from supervisor.supervision.policy import Termination
from supervisor.supervision.states import Liveness


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one liveness or health probe."""

    liveness: Liveness
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.liveness is Liveness.ONLINE


@dataclass(frozen=True, slots=True)
class CheckSettings:
    """How often to probe a RUNNING resource and how many failures in a row are fatal to it."""

    interval: float
    timeout: float
    failures: int
    reason: str = "health_check"


class Handle(Protocol):
    """One running instance of a resource (a process, a container, a session)."""

    @property
    def pid(self) -> int | None: ...

    @property
    def ident(self) -> str | None:
        """A container id or other identity shown in status; None for plain processes."""

    async def wait(self) -> Termination:
        """Return when the instance ends by itself."""

    async def stop(self, timeout: float) -> Termination:
        """End the instance gracefully, forcefully after `timeout` seconds; idempotent."""

    def kill(self) -> None:
        """End the instance now, without waiting; the last resort on cancellation."""


class OutputSource(Protocol):
    """A resource's kept program output (`supervisor logs`)."""

    def read(self, stream: str, lines: int, follow: bool) -> AsyncGenerator[bytes, None]:
        """The last `lines` lines of `stream` ("stdout" or "stderr"), then, with `follow`,
        what it prints next, as it comes."""


class Resource(Protocol):
    """A kind of managed thing, as the supervisor sees it."""

    kind: str
    name: str

    @property
    def endpoint(self) -> str | None:
        """Where clients reach it (host:port), when it serves something; else None."""

    @property
    def full_name(self) -> str:
        """A Deephaven full name shown beside the state (`community:config:NAME`), or ""."""

    def credentials(self) -> dict[str, Any]:
        """How a client connects to it.

        Raises:
            NoCredentialsError: its kind has none.
            NotRunningError: it has some, once it is running.
        """

    def output(self) -> OutputSource:
        """Its program output.

        Raises:
            NoOutputError: its kind keeps none.
        """

    def reconfigure(self, config: Any) -> None:
        """Take a changed config of the same kind whose changes need no new instance."""

    @property
    def check_settings(self) -> CheckSettings | None:
        """Periodic check settings while RUNNING, or None for no periodic check."""

    async def start(self) -> Handle:
        """Launch an instance; if cancelled, leave nothing running behind.

        Raises:
            StartError: it could not be launched (retried per policy).
            MisconfiguredError: it never will be with these settings (FATAL).
        """

    async def ready(self, handle: Handle) -> None:
        """Return once `handle` is ready to serve; the supervisor bounds the wait."""

    async def check(self, handle: Handle) -> CheckResult:
        """Probe `handle` once; the supervisor bounds the wait."""

    def is_success(self, term: Termination) -> bool:
        """Whether an instance that ended this way did its job (for `on-failure`)."""


class ResourceBase:
    """The answers of a kind without an endpoint, a full name or credentials."""

    __slots__ = ()  # so that a kind with many instances can use slots

    kind: str
    name: str

    @property
    def endpoint(self) -> str | None:
        return None

    @property
    def full_name(self) -> str:
        return ""

    def credentials(self) -> dict[str, Any]:
        raise NoCredentialsError(f"{self.name} is a {self.kind} resource: it has no credentials")

    def output(self) -> OutputSource:
        raise NoOutputError(f"{self.name} is a {self.kind} resource: it keeps no program output")


def hopeless(exc: MisconfiguredError) -> tuple[str, CheckResult]:
    """A start that no retry can fix: FATAL, with the liveness that says why."""
    liveness = (
        Liveness.UNAUTHORIZED if isinstance(exc, UnauthorizedError) else Liveness.MISCONFIGURED
    )
    return ("hopeless", CheckResult(liveness, str(exc)))
