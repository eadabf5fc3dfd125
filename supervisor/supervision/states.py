"""Resource states, liveness values and the transition event every state change produces.

State names are supervisord's, which operators already know. `ALLOWED` is the whole
machine; `ResourceSupervisor` refuses anything else, so an impossible transition is a bug
that fails loudly in tests instead of a wrong metric in production.
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
class Transition:
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
    seq: int = 0
    time: float = 0.0

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
