"""What a supervisor is configured with, and what it reports.

`Settings` is replaceable in place (`ResourceSupervisor.update`); the protocols let the
config schema's models be passed as they are, without this package importing them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from supervisor.supervision.policy import BackoffSettings
from supervisor.supervision.states import Liveness, State


class IntensitySettings(Protocol):
    @property
    def max_restarts(self) -> int: ...
    @property
    def within(self) -> float: ...


class RestartSettings(Protocol):
    @property
    def policy(self) -> str: ...
    @property
    def backoff(self) -> BackoffSettings: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def intensity(self) -> IntensitySettings: ...
    @property
    def fatal_retry_after(self) -> float: ...


@dataclass(frozen=True, slots=True)
class Settings:
    """What the supervisor needs from a resource's config; replaceable in place."""

    restart: RestartSettings
    start_timeout: float = 30.0
    stop_timeout: float = 10.0
    autostart: bool = True


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A resource's status as the API and `supervisor status` show it."""

    name: str
    kind: str
    state: State
    liveness: Liveness
    detail: str
    restarts: int
    since: float
    pid: int | None
    ident: str | None
    endpoint: str | None = None  # host:port for network resources (never a secret)
    identity: str | None = None  # a Deephaven full name, e.g. community:config:NAME
