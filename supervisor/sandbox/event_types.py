"""What happens in an environment, as typed events on the bus.

Each event carries what its listeners need. The ones the metrics and the log read are
subclasses of the bus's plain kinds (`supervision.states`: `Transition`, `Refusal`,
`HookRun`, `Upkeep`), whose fields hold the values they count: those listeners sit below
this package and never import it. Each also carries the live environment, sandbox,
session and feature for an environment's in-process handlers (`events.EventHandler`).
The four that change a status are `Transition`s, shown on `/v1/events` exactly as they
always were.

The subjects are typed by the small views below rather than by `Environment` or
`Sandbox`: those modules publish these events, so naming them here would close an import
cycle. At run time they are the real objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus
from supervisor.supervision.states import Event, HookRun, Refusal, Transition, Upkeep

if TYPE_CHECKING:
    from supervisor.sandbox.session import Session

#: The feature hooks, as event and metric label values.
Hook = Literal["setup", "teardown", "setup_session", "teardown_session", "housekeep"]


class EnvironmentView(Protocol):
    """An environment, as a listener sees it."""

    @property
    def name(self) -> str: ...


class SandboxView(Protocol):
    """A sandbox, as a listener sees it."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> SandboxStatus: ...
    @property
    def state_error(self) -> BaseException | None: ...


class FeatureView(Protocol):
    """A feature, as a listener sees it."""

    @property
    def name(self) -> str: ...


def describe(error: BaseException | None) -> str:
    """An error as the stream shows it: `Type: message`."""
    return "" if error is None else f"{type(error).__name__}: {error}"


class SandboxEvent:
    """Mixin of every event an environment publishes; `env` is that environment."""

    __slots__ = ()
    env: EnvironmentView


# -- status changes (kept and streamed) --------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentStatusChanged(Transition, SandboxEvent):
    """An environment's status moved (subject `environment`)."""

    env: EnvironmentView

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        backend: str,
        *,
        old: EnvironmentStatus,
        new: EnvironmentStatus,
        error: BaseException | None,
    ) -> EnvironmentStatusChanged:
        offline = new is EnvironmentStatus.OFFLINE
        return cls(
            "environment",
            env.name,
            backend,
            old.value,
            new.value,
            "error" if error is not None and offline else new.value.lower(),
            detail=describe(error) if offline else "",
            env=env,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStatusChanged(Transition, SandboxEvent):
    """A sandbox's status moved, after `span` seconds in the old one (subject `sandbox`)."""

    env: EnvironmentView
    sandbox: SandboxView

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        backend: str,
        sandbox: SandboxView,
        *,
        old: SandboxStatus,
        new: SandboxStatus,
        span: float,
    ) -> SandboxStatusChanged:
        error = sandbox.state_error
        return cls(
            "sandbox",
            sandbox.id,
            backend,
            old.value,
            new.value,
            "status" if error is None else "state_error",
            detail=describe(error) if new is SandboxStatus.OFFLINE else "",
            environment=env.name,
            span=span,
            env=env,
            sandbox=sandbox,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionStarted(Transition, SandboxEvent):
    """A session started (`active`) or failed to (`ended`, reason `setup_failed`).

    `duration` is its setup; `span` runs from the acquire request to the session started.
    """

    env: EnvironmentView
    sandbox: SandboxView
    session: Session
    duration: float
    error: BaseException | None

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        backend: str,
        sandbox: SandboxView,
        session: Session,
        *,
        duration: float,
        error: BaseException | None,
    ) -> SessionStarted:
        failed = error is not None
        return cls(
            "session",
            session.id,
            backend,
            "",
            "ended" if failed else "active",
            "setup_failed" if failed else "acquired",
            detail=f"sandbox {sandbox.id}" + (f"; {describe(error)}" if failed else ""),
            environment=env.name,
            span=session.acquire_wait + duration,
            env=env,
            sandbox=sandbox,
            session=session,
            duration=duration,
            error=error,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionEnded(Transition, SandboxEvent):
    """A session ended; its reason is the outcome (`released`, `expired`, `failed`, or
    `lost` with the node its sandbox ran on).

    `duration` is its teardown; `span` its whole life.
    """

    env: EnvironmentView
    sandbox: SandboxView
    session: Session
    duration: float
    error: BaseException | None

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        backend: str,
        sandbox: SandboxView,
        session: Session,
        *,
        duration: float,
        lifetime: float,
        error: BaseException | None,
    ) -> SessionEnded:
        outcome = "expired" if session.expired else ("failed" if error else "released")
        if session.end_reason == "lost":
            outcome = "lost"
        return cls(
            "session",
            session.id,
            backend,
            "active",
            "ended",
            outcome,
            detail=describe(error),
            environment=env.name,
            span=lifetime,
            env=env,
            sandbox=sandbox,
            session=session,
            duration=duration,
            error=error,
        )


# -- what the metrics count besides ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class AcquireRejected(Refusal, SandboxEvent):
    """An acquire refused: reason `overload` (timed out at max_size) or `outage`."""

    env: EnvironmentView

    @classmethod
    def of(cls, env: EnvironmentView, reason: str) -> AcquireRejected:
        return cls("environment", env.name, reason, env=env)


@dataclass(frozen=True, slots=True, kw_only=True)
class FeatureHookRan(HookRun, SandboxEvent):
    """One feature hook ran, on a sandbox or (`sandbox` None) for the whole environment.

    `session` is set for the session hooks (None for a proactive `setup_session`);
    `counter` is the environment's housekeeping run for an environment `housekeep`.
    """

    env: EnvironmentView
    sandbox: SandboxView | None
    feature: FeatureView
    session: Session | None = None
    counter: int = 0

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        sandbox: SandboxView | None,
        feature: FeatureView,
        *,
        hook: Hook,
        duration: float,
        error: BaseException | None,
        session: Session | None = None,
        counter: int = 0,
    ) -> FeatureHookRan:
        return cls(
            env.name,
            feature.name,
            hook,
            duration,
            error,
            env=env,
            sandbox=sandbox,
            feature=feature,
            session=session,
            counter=counter,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvironmentHousekept(Upkeep, SandboxEvent):
    """One periodic housekeeping run; `counts`: dead, replaced, recycled, shrunk, expired."""

    env: EnvironmentView
    counter: int
    counts: Mapping[str, int]

    @classmethod
    def of(
        cls,
        env: EnvironmentView,
        *,
        counter: int,
        duration: float,
        error: BaseException | None,
        counts: Mapping[str, int],
    ) -> EnvironmentHousekept:
        return cls(
            "environment", env.name, duration, error, env=env, counter=counter, counts=counts
        )


# -- for the handlers only ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvironmentStarting(Event, SandboxEvent):
    env: EnvironmentView


@dataclass(frozen=True, slots=True)
class EnvironmentStarted(Event, SandboxEvent):
    """The first bring-up was attempted for every `min_ready` sandbox (or start failed)."""

    env: EnvironmentView
    duration: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class EnvironmentShuttingDown(Event, SandboxEvent):
    env: EnvironmentView
    offline_duration: float


@dataclass(frozen=True, slots=True)
class EnvironmentShutdown(Event, SandboxEvent):
    env: EnvironmentView
    duration: float
    lifetime: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class SandboxStarted(Event, SandboxEvent):
    """A sandbox came up READY, or failed to (`error`)."""

    env: EnvironmentView
    sandbox: SandboxView
    duration: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class SandboxShutdown(Event, SandboxEvent):
    env: EnvironmentView
    sandbox: SandboxView
    duration: float
    lifetime: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class SessionActivity(Event, SandboxEvent):
    """Client work (`exec`, `run_script`, `put_files`, `get_files`, `list_files`) finished,
    with its arguments."""

    env: EnvironmentView
    sandbox: SandboxView
    name: str
    session: Session | None
    duration: float
    error: BaseException | None
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class SandboxHousekept(Event, SandboxEvent):
    """One keepalive probe of a sandbox."""

    env: EnvironmentView
    sandbox: SandboxView
    counter: int
    duration: float
    error: BaseException | None
