"""The last hour at a glance: 60 per-minute counters the console draws as small charts.

The event ring cannot hold an hour at scale (10,000 sandboxes churn through it in
minutes), and Prometheus may not be there, so the daemon keeps its own hour: one bucket
per minute, in a ring of 60 indexed by the minute, so an event costs a dict lookup and
two additions whatever the rate. Restarts and transitions are counted as they are
published; the resources' state counts are a census taken at each minute's end (by
`serve`, once a minute: a count kept from events alone would drift with every reload
that adds or removes a resource).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from supervisor.supervision.states import Transition

MINUTES = 60


@dataclass(slots=True)
class Minute:
    """One minute's counts; `states` is None until the minute's census is taken."""

    start: int  # unix time of the minute's first second
    restarts: int = 0
    transitions: int = 0
    states: dict[str, int] | None = field(default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "restarts": self.restarts,
            "transitions": self.transitions,
            "states": self.states,
        }


class MinuteRing:
    """Restarts and transitions per minute, and the resources' states at each minute's end.

    `census` counts the resources in each state now; `clock` is the wall clock (unix
    seconds), injected for tests.
    """

    def __init__(
        self,
        census: Callable[[], Mapping[str, int]],
        *,
        minutes: int = MINUTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if minutes < 1:
            raise ValueError("minutes must be at least 1")
        self._census = census
        self._clock = clock
        self._ring: list[Minute | None] = [None] * minutes

    def _bucket(self, now: float) -> Minute:
        start = int(now // 60) * 60
        slot = (start // 60) % len(self._ring)
        found = self._ring[slot]
        if found is None or found.start != start:
            found = self._ring[slot] = Minute(start)  # an hour old (or never used): reuse
        return found

    def observe(self, event: object) -> None:
        """Bus listener: count a resource transition (and a restart) in this minute."""
        if isinstance(event, Transition) and event.subject == "resource":
            bucket = self._bucket(self._clock())
            bucket.transitions += 1
            if event.restart:
                bucket.restarts += 1

    def close_minute(self, start: float) -> None:
        """Take the census now as the end of the minute that began at `start`."""
        self._bucket(start).states = dict(self._census())

    def series(self) -> list[Minute]:
        """The last `minutes` minutes, oldest first, this one (counted so far, its census
        taken now) last; a minute with nothing kept is all zeros and no census."""
        now = self._clock()
        current = int(now // 60) * 60
        out = []
        for back in range(len(self._ring) - 1, -1, -1):
            start = current - 60 * back
            found = self._ring[(start // 60) % len(self._ring)]
            out.append(Minute(start) if found is None or found.start != start else found)
        latest = out[-1]
        out[-1] = Minute(latest.start, latest.restarts, latest.transitions, dict(self._census()))
        return out

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Take a census at the end of every minute, until cancelled."""
        task_status.started()
        while True:
            now = self._clock()
            start = int(now // 60) * 60
            await trio.sleep(start + 60 - now)
            self.close_minute(start)  # a late wake-up still closes the minute it waited on
