"""The typed events of an environment (supervisor/sandbox/event_types.py): what the
stream shows of them, and what the metrics count from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from supervisor.errors import SandboxStateError
from supervisor.observability.metrics import Metrics
from supervisor.sandbox.event_types import (
    AcquireRejected,
    EnvironmentHousekept,
    EnvironmentStatusChanged,
    FeatureHookRan,
    SandboxStatusChanged,
    SessionEnded,
    SessionStarted,
)
from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus
from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import Transition

S = SandboxStatus


@dataclass
class Env:
    name: str = "box"


@dataclass
class Box:
    id: str = "box/0:0"
    status: SandboxStatus = S.READY
    state_error: BaseException | None = None


@dataclass
class Held:
    id: str = "box-session-0123456789ab"
    acquire_wait: float = 0.25
    expired: bool = False
    end_reason: str = ""


@dataclass
class Named:
    name: str = "git"


def test_the_stream_shows_a_sandbox_event_as_the_transition_it_always_was() -> None:
    """to_json of the typed event is the old shape, and the ring keeps a plain Transition."""
    box = Box(state_error=SandboxStateError("disk gone"))
    event = SandboxStatusChanged.of(
        Env(), "process", box, old=S.SHUTTING_DOWN, new=S.OFFLINE, span=1.5
    )
    assert event.to_json() == {
        "seq": 0,
        "time": 0.0,
        "subject": "sandbox",
        "name": "box/0:0",
        "kind": "process",
        "from": "SHUTTING_DOWN",
        "to": "OFFLINE",
        "reason": "state_error",
        "environment": "box",
        "detail": "SandboxStateError: disk gone",
    }
    bus = EventBus()
    bus.publish(event)
    [kept], _ = bus.replay(0)
    assert type(kept) is Transition  # no live sandbox kept in the ring
    assert kept.to_json() == {**event.to_json(), "seq": 1, "time": kept.time}


def test_sessions_and_environments_keep_their_stream_shape() -> None:
    """A session's start and end and an environment's moves, as /v1/events showed them."""
    env, box, held = Env(), Box(), Held()
    started = SessionStarted.of(env, "process", box, held, duration=0.5, error=None)
    assert (started.from_state, started.to_state, started.reason) == ("", "active", "acquired")
    assert started.detail == "sandbox box/0:0"
    failed = SessionStarted.of(env, "process", box, held, duration=0.5, error=ValueError("no"))
    assert (failed.to_state, failed.reason) == ("ended", "setup_failed")
    assert failed.detail == "sandbox box/0:0; ValueError: no"
    ended = SessionEnded.of(env, "process", box, held, duration=0.1, lifetime=9.0, error=None)
    assert (ended.from_state, ended.to_state, ended.reason) == ("active", "ended", "released")
    offline = EnvironmentStatusChanged.of(
        env,
        "process",
        old=EnvironmentStatus.SHUTTING_DOWN,
        new=EnvironmentStatus.OFFLINE,
        error=RuntimeError("engine gone"),
    )
    assert offline.to_json()["reason"] == "error"
    assert "environment" not in offline.to_json()  # the subject is the environment itself


@pytest.fixture
def counted() -> tuple[EventBus, CollectorRegistry]:
    registry = CollectorRegistry()
    bus = EventBus()
    bus.add_listener(Metrics(registry).observe_transition)
    return bus, registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_the_metrics_count_the_sandbox_and_session_transitions(
    counted: tuple[EventBus, CollectorRegistry],
) -> None:
    """Status changes, acquire waits, session outcomes and lifetimes, from the events."""
    bus, registry = counted
    env, box, held = Env(), Box(), Held()
    bus.publish(SandboxStatusChanged.of(env, "process", box, old=S.READY, new=S.ACQUIRED, span=1))
    bus.publish(SessionStarted.of(env, "process", box, held, duration=0.5, error=None))
    bus.publish(SessionStarted.of(env, "process", box, held, duration=0.5, error=ValueError()))
    bus.publish(
        SessionEnded.of(env, "process", box, Held(expired=True), duration=0, lifetime=9, error=None)
    )
    transitions = "supervisor_sandbox_transitions_total"
    labels: dict[str, Any] = {"environment": "box", "from_status": "READY", "to_status": "ACQUIRED"}
    assert value(registry, transitions, **labels) == 1
    assert value(registry, "supervisor_session_acquire_wait_seconds_sum", environment="box") == 0.75
    ended = "supervisor_sessions_ended_total"
    assert value(registry, ended, environment="box", outcome="failed") == 1
    assert value(registry, ended, environment="box", outcome="expired") == 1
    assert value(registry, "supervisor_session_duration_seconds_sum", environment="box") == 9


def test_the_metrics_count_refusals_feature_errors_and_housekeeping(
    counted: tuple[EventBus, CollectorRegistry],
) -> None:
    """The events that are no transition still move their series; a hook that worked does not."""
    bus, registry = counted
    env = Env()
    bus.publish(AcquireRejected.of(env, "overload"))
    for error in (None, ValueError("broke")):
        hook_ran = FeatureHookRan.of(
            env, Box(), Named(), hook="setup_session", duration=0.1, error=error
        )
        bus.publish(hook_ran)
    counts = dict.fromkeys(("dead", "replaced", "recycled", "shrunk", "expired"), 0)
    bus.publish(EnvironmentHousekept.of(env, counter=1, duration=0.5, error=None, counts=counts))
    rejected = "supervisor_acquire_rejections_total"
    assert value(registry, rejected, environment="box", reason="overload") == 1
    errors = "supervisor_feature_errors_total"
    assert value(registry, errors, environment="box", feature="git", phase="setup_session") == 1
    housekeeping = "supervisor_housekeeping_duration_seconds_sum"
    assert value(registry, housekeeping, environment="box") == 0.5
