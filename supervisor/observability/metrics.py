"""Prometheus metrics: counters fed by the event bus, state-sets computed at scrape time.

The registry belongs to the daemon (tests build their own). Transitions, restarts and
durations are counted as events happen; current state and liveness are rendered from the
supervisors' snapshots when Prometheus scrapes, so a series can never disagree with
`supervisor status`. Rendering runs in a worker thread: a scrape of
10k series takes tens of milliseconds and must not stall the API or supervision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from supervisor import __version__
from supervisor.supervision.settings import Snapshot
from supervisor.supervision.states import RESTART_REASONS, Liveness, State, Transition

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


_STATE_HEADER = (
    "# HELP supervisor_resource_state Current state of each resource (1 for the current state, 0 otherwise).\n"
    "# TYPE supervisor_resource_state gauge\n"
)
_LIVENESS_HEADER = (
    "# HELP supervisor_resource_liveness Current liveness of each resource (1 for the current status, 0 otherwise).\n"
    "# TYPE supervisor_resource_liveness gauge\n"
)


class Metrics:
    """Every metric of the contract, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("supervisor_build_info", "Build information.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.transitions = Counter(
            "supervisor_resource_transitions_total",
            "Resource state transitions.",
            ["resource", "kind", "from_state", "to_state"],
            registry=r,
        )
        self.restarts = Counter(
            "supervisor_resource_restarts_total",
            "Resource restarts, by bounded reason.",
            ["resource", "kind", "reason"],
            registry=r,
        )
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
        ProcessCollector(registry=r)
        self._starting_at: dict[str, float] = {}
        self.config_last_reload_success.set(time.time())

    def observe_transition(self, event: Transition) -> None:
        """Bus listener: count the transition, the restart, the start duration."""
        if event.subject != "resource":
            return
        self.transitions.labels(event.name, event.kind, event.from_state, event.to_state).inc()
        if event.restart:
            self.restarts.labels(event.name, event.kind, event.reason).inc()
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
        for collector, label_sets in (
            (self.transitions, [(f, t) for f in State for t in State]),
            (self.restarts, [(reason,) for reason in RESTART_REASONS]),
        ):
            for labels in label_sets:
                try:
                    collector.remove(name, kind, *labels)
                except KeyError:
                    continue
        self._starting_at.pop(name, None)

    async def render(self, snapshots: Sequence[Snapshot]) -> bytes:
        """The exposition text; state-sets from `snapshots`, rendered off the event loop."""
        frozen = tuple(snapshots)

        def render() -> bytes:
            return generate_latest(self.registry) + render_state_sets(frozen).encode()

        return await trio.to_thread.run_sync(render)
