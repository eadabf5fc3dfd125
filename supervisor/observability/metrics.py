"""Prometheus metrics: counters fed by the event bus, state-sets computed at scrape time.

The registry belongs to the daemon (tests build their own). Transitions, restarts and
durations are counted as events happen: `observe_transition` listens to the bus and
takes what it counts from the events themselves (a resource's transitions, a sandbox's,
a session's start and end, refused acquires, failed feature hooks, housekeeping runs).
Current state and liveness are rendered from the supervisors' snapshots when Prometheus
scrapes, so a series can never disagree with `supervisor status`. Rendering runs in a
worker thread: a scrape of 10k series takes tens of milliseconds and must not stall the
API or supervision. Session ids appear in events and logs, never in labels.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from supervisor import __version__
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import (
    Event,
    HookRun,
    Liveness,
    Refusal,
    State,
    Transition,
    Upkeep,
)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_state_sets(snapshots: Sequence[Snapshot]) -> str:
    """supervisor_resource_state and supervisor_resource_liveness as 0/1 state-sets.

    Written by hand rather than through a Collector: these are 12 series per resource,
    most of a scrape, and prometheus_client's generic formatting of them took ~80 ms for
    1,000 resources, holding the GIL long enough to stall the API in the other thread.
    """
    out = [_STATE_HEADER]
    for snap in snapshots:
        prefix = f'supervisor_resource_state{{resource="{_escape(snap.name)}",kind="{_escape(snap.kind)}",state="'
        out.extend(f'{prefix}{s.value}"}} {"1.0" if snap.state is s else "0.0"}\n' for s in State)
    out.append(_LIVENESS_HEADER)
    for snap in snapshots:
        prefix = f'supervisor_resource_liveness{{resource="{_escape(snap.name)}",kind="{_escape(snap.kind)}",status="'
        out.extend(
            f'{prefix}{v.value}"}} {"1.0" if snap.liveness is v else "0.0"}\n' for v in Liveness
        )
    return "".join(out)


def render_environment_gauges(environments: Sequence[Mapping[str, Any]]) -> str:
    """supervisor_environment_status (state-set), supervisor_sandboxes and
    supervisor_sessions_active, from each environment's `stats()`."""
    status = [
        "# HELP supervisor_environment_status Current status of each environment (1 for the current status).\n",
        "# TYPE supervisor_environment_status gauge\n",
    ]
    sandboxes = [
        "# HELP supervisor_sandboxes Sandboxes of each environment, by status.\n",
        "# TYPE supervisor_sandboxes gauge\n",
    ]
    active = [
        "# HELP supervisor_sessions_active Sessions in progress.\n",
        "# TYPE supervisor_sessions_active gauge\n",
    ]
    for env in environments:
        name = _escape(str(env["name"]))
        for value in ENVIRONMENT_STATUSES:
            flag = "1.0" if env["status"] == value else "0.0"
            status.append(
                f'supervisor_environment_status{{environment="{name}",status="{value}"}} {flag}\n'
            )
        for value, count in env["sandboxes"].items():
            sandboxes.append(
                f'supervisor_sandboxes{{environment="{name}",status="{value}"}} {float(count)}\n'
            )
        active.append(
            f'supervisor_sessions_active{{environment="{name}"}} {float(env["active_sessions"])}\n'
        )
    return "".join(status + sandboxes + active)


ENVIRONMENT_STATUSES = ("CREATED", "ONLINE", "SHUTTING_DOWN", "OFFLINE")

_STATE_HEADER = (
    "# HELP supervisor_resource_state Current state of each resource (1 for the current state, 0 otherwise).\n"
    "# TYPE supervisor_resource_state gauge\n"
)
_LIVENESS_HEADER = (
    "# HELP supervisor_resource_liveness Current liveness of each resource (1 for the current status, 0 otherwise).\n"
    "# TYPE supervisor_resource_liveness gauge\n"
)


class ResourceCounters(Collector):
    """The per-resource counters (transitions, restarts) as plain ints, rendered at scrape
    exactly as prometheus_client `Counter`s would be: a child per label set (a lock and a
    value object each) cost about 1.3 KB per resource at 1,000 resources."""

    def __init__(self) -> None:
        self.transitions: dict[tuple[str, str, str, str], int] = {}
        self.restarts: dict[tuple[str, str, str], int] = {}

    def count(self, event: Transition) -> None:
        key = (event.name, event.kind, event.from_state, event.to_state)
        self.transitions[key] = self.transitions.get(key, 0) + 1
        if event.restart:
            reason = (event.name, event.kind, event.reason)
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def forget(self, name: str, kind: str) -> None:
        owner = (name, kind)
        self.transitions = {k: n for k, n in self.transitions.items() if k[:2] != owner}
        self.restarts = {k: n for k, n in self.restarts.items() if k[:2] != owner}

    def collect(self) -> list[CounterMetricFamily]:
        """Both families; runs in the render thread, so it reads copies (`dict.copy` is
        atomic under the GIL while the event loop counts)."""
        transitions = CounterMetricFamily(
            "supervisor_resource_transitions_total",
            "Resource state transitions.",
            labels=["resource", "kind", "from_state", "to_state"],
        )
        for key, n in self.transitions.copy().items():
            transitions.add_metric(key, float(n))
        restarts = CounterMetricFamily(
            "supervisor_resource_restarts_total",
            "Resource restarts, by bounded reason.",
            labels=["resource", "kind", "reason"],
        )
        for reason, n in self.restarts.copy().items():
            restarts.add_metric(reason, float(n))
        return [transitions, restarts]


class Metrics:
    """Every metric of the contract, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("supervisor_build_info", "Build information.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.resource_counters = ResourceCounters()
        r.register(self.resource_counters)
        self.start_duration = Histogram(
            "supervisor_resource_start_duration_seconds",
            "Time from STARTING to RUNNING.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.check_duration = Histogram(
            "supervisor_liveness_check_duration_seconds",
            "Duration of liveness and health checks.",
            ["kind"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.config_reloads = Counter(
            "supervisor_config_reloads_total", "Config reloads, by result.", ["result"], registry=r
        )
        self.config_last_reload_success = Gauge(
            "supervisor_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load.",
            registry=r,
        )
        self.orphans_reaped = Counter(
            "supervisor_orphans_reaped_total",
            "Processes and containers of a previous run stopped at start-up.",
            ["kind"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "supervisor_event_loop_lag_seconds",
            "How late the event loop woke a periodic probe, most recent sample.",
            registry=r,
        )
        self.sandbox_transitions = Counter(
            "supervisor_sandbox_transitions_total",
            "Sandbox status changes.",
            ["environment", "from_status", "to_status"],
            registry=r,
        )
        self.acquire_wait = Histogram(
            "supervisor_session_acquire_wait_seconds",
            "Time from an acquire request to a sandbox handed out.",
            ["environment"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.session_duration = Histogram(
            "supervisor_session_duration_seconds",
            "Session lifetimes, start to end.",
            ["environment"],
            buckets=(*_DURATION_BUCKETS, 600, 1800, 3600, 14400),
            registry=r,
        )
        self.sessions_ended = Counter(
            "supervisor_sessions_ended_total",
            "Sessions ended, by outcome (released, expired, failed, lost).",
            ["environment", "outcome"],
            registry=r,
        )
        self.acquire_rejections = Counter(
            "supervisor_acquire_rejections_total",
            "Acquires refused, by reason (overload, outage, offline).",
            ["environment", "reason"],
            registry=r,
        )
        self.feature_errors = Counter(
            "supervisor_feature_errors_total",
            "Feature hooks that raised, by hook.",
            ["environment", "feature", "phase"],
            registry=r,
        )
        self.housekeeping_duration = Histogram(
            "supervisor_housekeeping_duration_seconds",
            "Duration of an environment's periodic housekeeping run.",
            ["environment"],
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        self._starting_at: dict[str, float] = {}
        self.config_last_reload_success.set(time.time())

    def observe_transition(self, event: Event) -> None:
        """Bus listener: count what every event says (its kind decides what)."""
        match event:
            case Transition(subject="resource"):
                self._observe_resource(event)
            case Transition(subject="sandbox"):
                self.sandbox_transitions.labels(
                    event.environment, event.from_state, event.to_state
                ).inc()
            case Transition(subject="session", reason="setup_failed"):
                self.sessions_ended.labels(event.environment, "failed").inc()
            case Transition(subject="session", to_state="active"):
                self.acquire_wait.labels(event.environment).observe(event.span or 0.0)
            case Transition(subject="session", to_state="ended"):
                self.sessions_ended.labels(event.environment, event.reason).inc()
                self.session_duration.labels(event.environment).observe(event.span or 0.0)
            case Refusal(subject="environment"):
                self.acquire_rejections.labels(event.name, event.reason).inc()
            case HookRun(error=error) if error is not None:
                self.feature_errors.labels(event.scope, event.owner, event.hook).inc()
            case Upkeep(subject="environment"):
                self.housekeeping_duration.labels(event.name).observe(event.duration)

    def _observe_resource(self, event: Transition) -> None:
        self.resource_counters.count(event)
        if event.to_state == State.STARTING:
            self._starting_at[event.name] = event.time
        elif event.to_state == State.RUNNING and event.name in self._starting_at:
            self.start_duration.labels(event.kind).observe(
                max(0.0, event.time - self._starting_at.pop(event.name))
            )

    def observe_check(self, kind: str, seconds: float) -> None:
        self.check_duration.labels(kind).observe(seconds)

    def forget(self, name: str, kind: str) -> None:
        """Drop the series of a resource that no longer exists (after a reload)."""
        self.resource_counters.forget(name, kind)
        self._starting_at.pop(name, None)

    def forget_environment(self, name: str) -> None:
        """Drop the labelled series of an environment that no longer exists."""
        for collector in (
            self.sandbox_transitions,
            self.acquire_wait,
            self.session_duration,
            self.sessions_ended,
            self.acquire_rejections,
            self.feature_errors,
            self.housekeeping_duration,
        ):
            stale = [
                labels
                for labels in list(collector._metrics)  # noqa: SLF001 - no public way to list children
                if labels[0] == name
            ]
            for labels in stale:
                collector.remove(*labels)

    async def render(
        self, snapshots: Sequence[Snapshot], environments: Sequence[Mapping[str, Any]] = ()
    ) -> bytes:
        """The exposition text; state-sets from `snapshots` and environment gauges from
        `environments` (their `stats()`), rendered off the event loop."""
        frozen = tuple(snapshots)
        envs = tuple(environments)

        def render() -> bytes:
            return (
                generate_latest(self.registry)
                + render_state_sets(frozen).encode()
                + render_environment_gauges(envs).encode()
            )

        return await trio.to_thread.run_sync(render)
