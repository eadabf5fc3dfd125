"""The daemon's health in one line (STATUS=) and its reason not to pet the watchdog."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import trio

from supervisor.observability.loop import LoopMonitor
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor


def health_problem(
    loop: LoopMonitor,
    supervisors: Iterable[ResourceSupervisor],
    max_lag: float,
    stuck_margin: float,
) -> str | None:
    """Why the daemon is unwell (a late loop, a resource wedged past its own deadline by
    `stuck_margin`), or None."""
    now = trio.current_time()
    if loop.lag > max_lag:
        return f"event loop lag {loop.lag:.1f}s"
    if now - loop.last_tick > 3 * loop.interval + max_lag:
        return "the event loop probe stopped ticking"
    for sup in supervisors:
        limit = {
            State.STARTING: sup.settings.start_timeout,
            State.STOPPING: sup.settings.stop_timeout,
        }.get(sup.state)
        if limit is not None and now - sup.since > limit + stuck_margin:
            return f"{sup.name} stuck in {sup.state.value} for {now - sup.since:.0f}s"
    return None


def summary(
    supervisors: Iterable[ResourceSupervisor], environments: Sequence[Mapping[str, Any]]
) -> str:
    """How many resources are in each notable state; environments online and sessions."""
    counts = dict.fromkeys((State.RUNNING, State.STARTING, State.BACKOFF, State.FATAL), 0)
    for sup in supervisors:
        counts[sup.state] = counts.get(sup.state, 0) + 1
    parts = [
        f"{n} {s.value.lower()}"
        for s, n in counts.items()
        if n or s in (State.RUNNING, State.FATAL)
    ]
    if environments:
        online = sum(1 for e in environments if e["status"] == "ONLINE" and not e["outage"])
        sessions = sum(e["active_sessions"] for e in environments)
        parts.append(f"{online}/{len(environments)} environments online, {sessions} sessions")
    return ", ".join(parts)
