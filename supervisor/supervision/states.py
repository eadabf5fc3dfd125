"""Resource states, liveness values, and the events of the bus: `Event` and `Transition`.

State names are supervisord's, which operators already know. `ALLOWED` is the whole
machine; `ResourceSupervisor` refuses anything else, so an impossible transition is a bug
that fails loudly in tests instead of a wrong metric in production.

Everything published on the bus is an `Event`, one of four kinds defined here in plain
values, so that a listener below the subsystems (the metrics, the log) can read them:
`Transition` (the one kind the bus also keeps and streams on `/v1/events`), `Refusal`,
`HookRun` and `Upkeep`. A subsystem publishes subclasses that add what its in-process
listeners need (the sandbox events add the live environment, sandbox and session); the
ring keeps a transition without them (`record()`), so it never holds a sandbox alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class State(StrEnum):
    STOPPED = "STOPPED"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    BACKOFF = "BACKOFF"
    STOPPING = "STOPPING"
    EXITED = "EXITED"
    FATAL = "FATAL"


class Liveness(StrEnum):
    ONLINE = "ONLINE"
    OFFLINE = "OFFLINE"
    UNAUTHORIZED = "UNAUTHORIZED"
    MISCONFIGURED = "MISCONFIGURED"
    UNKNOWN = "UNKNOWN"


# Liveness values that no amount of fast retrying can fix.
HOPELESS = frozenset({Liveness.UNAUTHORIZED, Liveness.MISCONFIGURED})

ALLOWED: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING}),
    # STARTING -> STOPPED: stopped before anything was launched (nothing to stop).
    State.STARTING: frozenset(
        {State.RUNNING, State.BACKOFF, State.STOPPING, State.STOPPED, State.EXITED, State.FATAL}
    ),
    State.RUNNING: frozenset({State.BACKOFF, State.STOPPING, State.EXITED, State.FATAL}),
    State.BACKOFF: frozenset({State.STARTING, State.STOPPED, State.FATAL}),
    State.STOPPING: frozenset(
        {State.STOPPED, State.STARTING, State.BACKOFF, State.EXITED, State.FATAL}
    ),
    State.EXITED: frozenset({State.STARTING}),
    State.FATAL: frozenset({State.STARTING, State.STOPPED}),
}

# Restart reasons are metric label values: keep this set small and closed.
RESTART_REASONS = frozenset(
    {
        "exit_code",
        "signal",
        "health_check",
        "start_timeout",
        "start_failed",
        "liveness",
        "operator",
        "reload",
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """Base of every event on the bus; listeners filter the kinds they need by type."""


@dataclass(frozen=True, slots=True)
class Transition(Event):
    """One state change of one subject, as published on the event bus.

    `seq` and `time` are stamped by the bus. `restart` marks the transitions that count as
    a restart (into BACKOFF after a failure, or an operator restart), with `reason` one of
    `RESTART_REASONS`.
    """

    subject: str
    name: str
    kind: str
    from_state: str
    to_state: str
    reason: str
    detail: str = ""
    attempt: int = 0
    next_delay: float | None = None
    restart: bool = False
    environment: str = ""  # for sandbox and session events: the environment they belong to
    identity: str = ""  # a Deephaven resource's full name (community:config:NAME, ...)
    # Seconds the subject spent in `from_state`, where it is measured: a sandbox's time
    # in its old status, a session's wait to be acquired (start) or its life (end).
    span: float | None = None
    seq: int = 0
    time: float = 0.0

    def record(self) -> Transition:
        """What the ring and the stream keep: this transition without a subclass's extras."""
        if type(self) is Transition:
            return self
        return Transition(
            self.subject,
            self.name,
            self.kind,
            self.from_state,
            self.to_state,
            self.reason,
            self.detail,
            self.attempt,
            self.next_delay,
            self.restart,
            self.environment,
            self.identity,
            self.span,
            self.seq,
            self.time,
        )

    def to_json(self) -> dict[str, object]:
        """The event as the API and the event stream show it."""
        data: dict[str, object] = {
            "seq": self.seq,
            "time": self.time,
            "subject": self.subject,
            "name": self.name,
            "kind": self.kind,
            "from": self.from_state,
            "to": self.to_state,
            "reason": self.reason,
        }
        if self.environment:
            data["environment"] = self.environment
        if self.identity:
            data["deephaven"] = self.identity
        if self.detail:
            data["detail"] = self.detail
        if self.attempt:
            data["attempt"] = self.attempt
        if self.next_delay is not None:
            data["next_delay"] = self.next_delay
        return data


@dataclass(frozen=True, slots=True)
class Refusal(Event):
    """A request turned away, nothing changed (an acquire: `overload` or `outage`)."""

    subject: str
    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class HookRun(Event):
    """One run of plugged-in code at a fixed point (an environment feature's `setup`...).

    `scope` is where it ran (the environment), `owner` whose hook it is (the feature).
    """

    scope: str
    owner: str
    hook: str
    duration: float
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class Upkeep(Event):
    """One periodic maintenance run of a subject (an environment's housekeeping)."""

    subject: str
    name: str
    duration: float
    error: BaseException | None
