"""The per-resource counters are plain ints, yet scrape exactly as prometheus_client's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    disable_created_metrics,
    enable_created_metrics,
    generate_latest,
)

from supervisor.observability.metrics import ResourceCounters
from supervisor.supervision.states import Transition

EVENTS = [
    Transition("resource", "web", "process", "STOPPED", "STARTING", "autostart"),
    Transition("resource", "web", "process", "STARTING", "RUNNING", "ready"),
    Transition("resource", "db", "container", "STOPPED", "STARTING", "autostart"),
    Transition("resource", "web", "process", "RUNNING", "BACKOFF", "exited", restart=True),
    Transition("resource", "web", "process", "BACKOFF", "STARTING", "backoff"),
    Transition("resource", "web", "process", "STARTING", "RUNNING", "ready"),
    Transition("resource", 'q"u\\o\nte', "process", "STOPPED", "STARTING", "autostart"),
]


@pytest.fixture(autouse=True)
def no_created_series() -> Iterator[None]:
    """As the daemon runs (`supervisor run` disables `*_created`), restored afterwards."""
    disable_created_metrics()  # type: ignore[no-untyped-call]
    yield
    enable_created_metrics()  # type: ignore[no-untyped-call]


def counters_as_prometheus_would(events: list[Transition], gone: tuple[str, str] | None) -> bytes:
    registry = CollectorRegistry()
    transitions = Counter(
        "supervisor_resource_transitions_total",
        "Resource state transitions.",
        ["resource", "kind", "from_state", "to_state"],
        registry=registry,
    )
    restarts = Counter(
        "supervisor_resource_restarts_total",
        "Resource restarts, by bounded reason.",
        ["resource", "kind", "reason"],
        registry=registry,
    )
    for e in events:
        transitions.labels(e.name, e.kind, e.from_state, e.to_state).inc()
        if e.restart:
            restarts.labels(e.name, e.kind, e.reason).inc()
    if gone is not None:
        for labels in list(transitions._metrics):
            if labels[:2] == gone:
                transitions.remove(*labels)
        for labels in list(restarts._metrics):
            if labels[:2] == gone:
                restarts.remove(*labels)
    return generate_latest(registry)


def ours(events: list[Transition], gone: tuple[str, str] | None) -> bytes:
    registry = CollectorRegistry()
    counters = ResourceCounters()
    registry.register(counters)
    for e in events:
        counters.count(e)
    if gone is not None:
        counters.forget(*gone)
    return generate_latest(registry)


def test_resource_counters_render_byte_for_byte_as_prometheus_counters() -> None:
    """Transition and restart counts scrape exactly as labelled prometheus_client Counters."""
    assert b'to_state="RUNNING"} 2.0' in ours(EVENTS, None)
    assert ours(EVENTS, None) == counters_as_prometheus_would(EVENTS, None)


def test_forgetting_a_resource_drops_exactly_its_series() -> None:
    """A removed resource's series go, as `Counter.remove` of each of its label sets would."""
    assert b'resource="web"' not in ours(EVENTS, ("web", "process"))
    assert ours(EVENTS, ("web", "process")) == counters_as_prometheus_would(
        EVENTS, ("web", "process")
    )


def test_no_counts_render_the_empty_families() -> None:
    """Before any transition the two families are there, empty, as unlabelled use leaves them."""
    assert ours([], None) == counters_as_prometheus_would([], None)
