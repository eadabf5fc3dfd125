"""When the daemon withholds the watchdog: a late loop, or a supervisor wedged past its deadline."""

from __future__ import annotations

import trio

from supervisor.config.load import load_text
from supervisor.runtime.daemon import STUCK_MARGIN, Daemon
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Settings
from supervisor.supervision.states import State
from supervisor.supervision.supervisor import ResourceSupervisor
from tests.fakes import FakeHandle, FakeResource, Restart


class Wedged(FakeResource):
    """A start that ignores cancellation: the supervisor cannot leave STARTING."""

    async def start(self) -> FakeHandle:
        with trio.CancelScope(shield=True):
            await trio.sleep(10_000)  # finite, so that the test can end
        raise AssertionError("unreachable")


async def test_a_supervisor_stuck_past_its_deadline_withholds_the_watchdog(
    autojump_clock: trio.abc.Clock,
) -> None:
    """STARTING longer than start_timeout + the margin is a wedge; before that, all is well."""
    daemon = Daemon(load_text(""))
    sup = ResourceSupervisor(
        "x", Wedged(), Settings(restart=Restart(), start_timeout=10), bus=EventBus()
    )
    daemon.resources.supervisors["x"] = sup
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sup.serve)
        nursery.start_soon(daemon.loop.serve)
        await trio.sleep(10 + STUCK_MARGIN - 1)
        assert sup.state is State.STARTING
        assert daemon.health_problem() is None
        await trio.sleep(2)
        assert daemon.health_problem() == f"x stuck in STARTING for {10 + STUCK_MARGIN + 1:.0f}s"
        nursery.cancel_scope.cancel()


async def test_a_late_event_loop_withholds_the_watchdog(autojump_clock: trio.abc.Clock) -> None:
    """Lag above the bound, or a loop probe that stopped ticking, is reported."""
    daemon = Daemon(load_text(""))
    assert daemon.health_problem() is None
    daemon.loop.lag = 7.0
    assert daemon.health_problem() == "event loop lag 7.0s"
    daemon.loop.lag = 0.0
    await trio.sleep(60)  # the probe is not running in this test: it never ticks
    assert daemon.health_problem() == "the event loop probe stopped ticking"
