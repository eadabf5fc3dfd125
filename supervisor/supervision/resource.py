"""What the supervisor needs from a resource kind: start, wait, check, stop.

Each kind (process, container, Deephaven server or session) implements `Resource`; the
supervisor owns every decision about *when* (timeouts, retries, backoff, intensity) and
the resource only knows *how*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

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


class Resource(Protocol):
    """A kind of managed thing, as the supervisor sees it."""

    kind: str

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
