"""The last hour at a glance: 60 per-minute buckets, fed by events, closed by a census."""

from __future__ import annotations

import trio

from supervisor.observability.glance import MinuteRing
from supervisor.supervision.states import Transition

RESTART = Transition("resource", "web", "process", "RUNNING", "BACKOFF", "exited", restart=True)
START = Transition("resource", "web", "process", "BACKOFF", "STARTING", "backoff")
SANDBOX = Transition("sandbox", "sb-1", "process", "READY", "ACQUIRED", "acquired")


class WallClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_restarts_and_transitions_are_counted_in_their_minute() -> None:
    """Each resource event lands in the bucket of the minute it happened in; other
    subjects are not counted."""
    clock = WallClock(6_000.0)  # minute 100
    ring = MinuteRing(lambda: {"RUNNING": 1}, clock=clock)
    for event in (RESTART, START, SANDBOX):
        ring.observe(event)
    clock.now = 6_061.0
    ring.observe(RESTART)
    minutes = ring.series()
    assert len(minutes) == 60
    assert [(m.start, m.restarts, m.transitions) for m in minutes[-2:]] == [
        (6_000, 1, 2),
        (6_060, 1, 1),
    ]
    assert minutes[0].start == 6_060 - 59 * 60
    assert minutes[-1].states == {"RUNNING": 1}  # the current minute's census is now


def test_a_bucket_an_hour_old_is_reused_not_added_to() -> None:
    """An event 60 minutes after another goes to the same slot, which starts from zero;
    the old minute is gone from the series."""
    clock = WallClock(0.0)
    ring = MinuteRing(dict, clock=clock)
    ring.observe(RESTART)
    ring.observe(RESTART)
    clock.now = 3_600.0
    ring.observe(RESTART)
    minutes = ring.series()
    assert (minutes[-1].start, minutes[-1].restarts) == (3_600, 1)
    assert sum(m.restarts for m in minutes) == 1
    assert minutes[0].start == 60


def test_a_minute_without_a_census_has_no_states() -> None:
    """Minutes before the daemon ran (or skipped) say so with None, not zeros."""
    ring = MinuteRing(lambda: {"RUNNING": 3}, clock=WallClock(600.0))
    ring.close_minute(540)
    minutes = ring.series()
    assert minutes[-2].states == {"RUNNING": 3}
    assert all(m.states is None for m in minutes[:-2])


async def test_serve_takes_a_census_at_each_minute_end(autojump_clock: trio.abc.Clock) -> None:
    """Started 30 s into a minute, the census for it is taken at its end: 30 s later,
    then every 60 s."""
    taken: list[float] = []

    def census() -> dict[str, int]:
        taken.append(trio.current_time())
        return {"RUNNING": len(taken)}

    base = trio.current_time()
    ring = MinuteRing(census, clock=lambda: 630.0 + trio.current_time() - base)
    async with trio.open_nursery() as nursery:
        await nursery.start(ring.serve)
        await trio.sleep(151)  # past the third turn (a tie at 150 has no set order)
        nursery.cancel_scope.cancel()
    assert [round(t - base, 6) for t in taken] == [30.0, 90.0, 150.0]
    states = [m.states for m in ring.series()[-4:-1]]
    assert states == [{"RUNNING": 1}, {"RUNNING": 2}, {"RUNNING": 3}]
