"""The resource state machine on a fake resource, with exact virtual times (MockClock)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from supervisor.errors import UnauthorizedError
from supervisor.supervision.bus import EventBus
from supervisor.supervision.resource import CheckSettings
from supervisor.supervision.settings import Settings
from supervisor.supervision.states import Liveness, State, Transition
from supervisor.supervision.supervisor import ResourceSupervisor
from tests.fakes import Backoff, FakeHandle, FakeResource, Intensity, Restart

DEFAULT_RESTART = Restart()


@asynccontextmanager
async def supervising(
    resource: FakeResource,
    restart: Restart = DEFAULT_RESTART,
    *,
    name: str = "r",
    depends_on: tuple[ResourceSupervisor, ...] = (),
    bus: EventBus | None = None,
    **settings: float | bool,
) -> AsyncIterator[tuple[ResourceSupervisor, list[Transition]]]:
    bus = bus or EventBus()
    events: list[Transition] = []
    bus.add_listener(lambda e: events.append(e) if e.name == name else None)
    sup = ResourceSupervisor(
        name,
        resource,
        Settings(restart=restart, **settings),  # type: ignore[arg-type]
        bus=bus,
        depends_on=depends_on,
        rng=random.Random(0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.serve)
        yield sup, events
        nursery.cancel_scope.cancel()


async def seen(sup: ResourceSupervisor, events: list[Transition], state: State) -> None:
    """Wait until `state` has been entered (even if it was left again at once)."""
    with trio.fail_after(10_000):
        await sup.wait_for(lambda _: any(e.to_state == state for e in events))


def path(events: list[Transition]) -> list[str]:
    return [e.to_state for e in events]


async def in_state(sup: ResourceSupervisor, state: State, timeout: float = 10_000) -> None:
    with trio.fail_after(timeout):
        await sup.wait_for(lambda s: s.state is state)


async def test_crash_loop_restarts_at_once_then_backs_off_exponentially(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The first failure restarts at once; later ones wait initial * factor^(n-2), capped."""
    fake = FakeResource(lifetime=0.0)
    restart = Restart(backoff=Backoff(initial=1, factor=2, max=8), intensity=Intensity(100, 1000))
    async with supervising(fake, restart) as (sup, _):
        with trio.fail_after(100):
            await sup.wait_for(lambda _: len(fake.handles) >= 8)
    assert [round(t, 6) for t in fake.starts] == [0, 0, 1, 3, 7, 15, 23, 31]


async def test_backoff_delay_and_attempt_are_published(autojump_clock: trio.abc.Clock) -> None:
    """Each BACKOFF event carries the reason, the attempt number and the next delay."""
    fake = FakeResource(lifetime=0.0, exit_code=3)
    async with supervising(fake) as (sup, events):
        with trio.fail_after(100):
            await sup.wait_for(lambda _: sum(e.to_state == "BACKOFF" for e in events) >= 3)
    backoffs = [e for e in events if e.to_state == "BACKOFF"]
    assert [(e.reason, e.attempt, e.next_delay) for e in backoffs[:3]] == [
        ("exit_code", 1, 0.0),
        ("exit_code", 2, 1.0),
        ("exit_code", 3, 2.0),
    ]
    assert all(e.restart for e in backoffs)
    assert backoffs[0].detail == "exited with code 3"


async def test_failure_after_reset_after_of_running_restarts_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    """reset_after of continuous RUNNING clears the consecutive-failure counter."""
    fake = FakeResource(lifetime=0.0)
    async with supervising(fake, Restart(reset_after=600)) as (sup, _):
        await sup.wait_for(lambda _: len(fake.handles) >= 3)  # t = 0, 0, 1: two failures
        fake.lifetime = 700.0
        await sup.wait_for(lambda _: len(fake.handles) >= 4)  # runs from 1 + 2 = 3 to 703
        fake.lifetime = 0.0
        await sup.wait_for(lambda _: len(fake.handles) >= 6)
    assert [round(t, 6) for t in fake.starts] == [0, 0, 1, 3, 703, 704]
    assert sup.restarts >= 5


async def test_intensity_limit_makes_fatal_then_retries_after_fatal_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    """More than max_restarts within the window is FATAL; FATAL is retried after fatal_retry."""
    fake = FakeResource(lifetime=0.0)
    restart = Restart(
        backoff=Backoff(initial=1, factor=1, max=1), intensity=Intensity(3, 60), fatal_retry=30
    )
    async with supervising(fake, restart) as (sup, events):
        await in_state(sup, State.FATAL)
        assert trio.current_time() == 2.0  # starts at 0, 0, 1, 2: the 4th restart trips it
        fatal = events[-1]
        assert fatal.next_delay == 30
        assert "more than 3 restarts within 60s" in fatal.detail
        await sup.wait_for(lambda s: len(fake.starts) == 5)
        assert fake.starts[-1] == 32.0
        assert [e.reason for e in events if e.to_state == "STARTING"][-1] == "fatal_retry"


async def test_operator_start_retries_fatal_at_once(autojump_clock: trio.abc.Clock) -> None:
    """An operator start does not wait for fatal_retry and starts with a clean slate."""
    fake = FakeResource(lifetime=0.0)
    restart = Restart(backoff=Backoff(initial=1, factor=1, max=1), intensity=Intensity(1, 60))
    async with supervising(fake, restart) as (sup, events):
        await in_state(sup, State.FATAL)
        fake.lifetime = None
        sup.start()
        await in_state(sup, State.RUNNING)
        assert trio.current_time() == 0.0
        assert events[-2].reason == "operator"


async def test_start_timeout_stops_the_instance_and_backs_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    """An instance not ready within start_timeout is stopped and counted as a failure."""
    fake = FakeResource(ready_delay=1_000)
    async with supervising(fake, start_timeout=5) as (sup, events):
        await seen(sup, events, State.BACKOFF)
        assert trio.current_time() == 5.0
    assert path(events)[:3] == ["STARTING", "STOPPING", "BACKOFF"]
    assert events[2].reason == "start_timeout"
    assert fake.handles[0].stop_calls == 1


async def test_start_error_backs_off_and_recovers(autojump_clock: trio.abc.Clock) -> None:
    """A StartError is a failure like any other: BACKOFF, then a new attempt."""
    fake = FakeResource(start_failures=2)
    async with supervising(fake) as (sup, events):
        await in_state(sup, State.RUNNING)
        assert trio.current_time() == 1.0  # failed at 0, retried at 0, failed, waited 1s
    assert [e.reason for e in events if e.to_state == "BACKOFF"] == ["start_failed", "start_failed"]


async def test_misconfigured_goes_fatal_without_retrying_fast(
    autojump_clock: trio.abc.Clock,
) -> None:
    """MisconfiguredError goes straight to FATAL with liveness MISCONFIGURED."""
    fake = FakeResource(misconfigured=True)
    async with supervising(fake) as (sup, _):
        await in_state(sup, State.FATAL)
        assert sup.liveness is Liveness.MISCONFIGURED
        assert len(fake.starts) == 1


class RejectedResource(FakeResource):
    """A resource whose server rejects its credentials at every start."""

    async def start(self) -> FakeHandle:
        self.starts.append(trio.current_time())
        raise UnauthorizedError("token rejected")


async def test_unauthorized_start_goes_fatal_with_liveness_unauthorized(
    autojump_clock: trio.abc.Clock,
) -> None:
    """UnauthorizedError at start is FATAL with liveness UNAUTHORIZED, retried only later."""
    fake = RejectedResource()
    async with supervising(fake) as (sup, events):
        await in_state(sup, State.FATAL)
        assert sup.liveness is Liveness.UNAUTHORIZED
        assert (events[-1].reason, events[-1].next_delay) == ("unauthorized", 300.0)
        assert len(fake.starts) == 1


async def test_operator_stop_and_start(autojump_clock: trio.abc.Clock) -> None:
    """stop: RUNNING -> STOPPING -> STOPPED, and it stays down; start brings it back at once."""
    fake = FakeResource()
    async with supervising(fake) as (sup, events):
        await in_state(sup, State.RUNNING)
        sup.stop()
        await in_state(sup, State.STOPPED)
        await trio.sleep(3600)
        assert sup.state is State.STOPPED
        sup.start()
        await in_state(sup, State.RUNNING)
        assert trio.current_time() == 3600.0
    assert path(events) == ["STARTING", "RUNNING", "STOPPING", "STOPPED", "STARTING", "RUNNING"]


async def test_stop_during_backoff_cancels_the_restart(autojump_clock: trio.abc.Clock) -> None:
    """A stop in BACKOFF goes to STOPPED without another start."""
    fake = FakeResource(lifetime=0.0)
    async with supervising(fake, Restart(backoff=Backoff(initial=60))) as (sup, _):
        await sup.wait_for(lambda s: s.state is State.BACKOFF and len(fake.starts) == 2)
        sup.stop()
        await in_state(sup, State.STOPPED)
        await trio.sleep(600)
        assert len(fake.starts) == 2


async def test_restart_counts_and_skips_stopped(autojump_clock: trio.abc.Clock) -> None:
    """restart: STOPPING -> STARTING directly, counted with reason operator."""
    fake = FakeResource()
    async with supervising(fake) as (sup, events):
        await in_state(sup, State.RUNNING)
        sup.restart()
        await sup.wait_for(lambda s: s.state is State.RUNNING and len(fake.handles) == 2)
    assert path(events) == ["STARTING", "RUNNING", "STOPPING", "STARTING", "RUNNING"]
    assert events[2].restart
    assert events[2].reason == "operator"
    assert sup.restarts == 1
    assert fake.handles[0].ended.is_set()


async def test_health_failures_in_a_row_restart(autojump_clock: trio.abc.Clock) -> None:
    """`failures` consecutive failed checks restart the resource with reason health_check."""
    fake = FakeResource(
        check_settings=CheckSettings(interval=5, timeout=1, failures=3),
        check_results=[
            Liveness.OFFLINE,
            Liveness.ONLINE,
            Liveness.OFFLINE,
            Liveness.OFFLINE,
            Liveness.OFFLINE,
        ],
    )
    async with supervising(fake) as (sup, events):
        await seen(sup, events, State.BACKOFF)
        assert trio.current_time() == 25.0  # the failure at 5s was followed by a success
    assert path(events)[:4] == ["STARTING", "RUNNING", "STOPPING", "BACKOFF"]
    assert events[3].reason == "health_check"


async def test_a_check_that_hangs_counts_as_failed(autojump_clock: trio.abc.Clock) -> None:
    """A check that outlives its timeout is a failure (a frozen server is not healthy)."""

    class Hanging(FakeResource):
        async def check(self, handle: object) -> object:  # type: ignore[override]
            await trio.sleep_forever()

    fake = Hanging(check_settings=CheckSettings(interval=5, timeout=2, failures=2))
    async with supervising(fake) as (sup, events):
        await seen(sup, events, State.BACKOFF)
        assert trio.current_time() == 14.0  # 5 + 2, then 5 + 2 again


async def test_unauthorized_check_goes_fatal(autojump_clock: trio.abc.Clock) -> None:
    """UNAUTHORIZED cannot be fixed by retrying fast: FATAL at the first such check."""
    fake = FakeResource(
        check_settings=CheckSettings(interval=5, timeout=1, failures=3),
        check_results=[Liveness.UNAUTHORIZED],
    )
    async with supervising(fake) as (sup, _):
        await in_state(sup, State.FATAL)
        assert sup.liveness is Liveness.UNAUTHORIZED
        assert trio.current_time() == 5.0


async def test_policy_never_exits(autojump_clock: trio.abc.Clock) -> None:
    """policy never: any end of a run is EXITED, and it stays there."""
    fake = FakeResource(lifetime=10, exit_code=1)
    async with supervising(fake, Restart(policy="never")) as (sup, events):
        await in_state(sup, State.EXITED)
        await trio.sleep(1000)
    assert path(events) == ["STARTING", "RUNNING", "EXITED"]


async def test_policy_on_failure_distinguishes_success(autojump_clock: trio.abc.Clock) -> None:
    """on-failure: a clean exit is EXITED, a failing one is restarted."""
    ok = FakeResource(lifetime=1, exit_code=0)
    async with supervising(ok, Restart(policy="on-failure")) as (sup, _):
        await in_state(sup, State.EXITED)
    bad = FakeResource(lifetime=1, exit_code=2)
    async with supervising(bad, Restart(policy="on-failure")) as (sup, events):
        await seen(sup, events, State.BACKOFF)


async def test_depends_on_waits_for_running(autojump_clock: trio.abc.Clock) -> None:
    """A dependent started together with its dependency starts once that one is RUNNING."""
    bus = EventBus()
    base = FakeResource(ready_delay=3)
    dependent = FakeResource()
    base_sup = ResourceSupervisor("base", base, Settings(restart=Restart()), bus=bus)
    dep_sup = ResourceSupervisor(
        "dep", dependent, Settings(restart=Restart()), bus=bus, depends_on=[base_sup]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep_sup.serve)  # the dependent first: it must wait anyway
        nursery.start_soon(base_sup.serve)
        await in_state(dep_sup, State.RUNNING)
        assert dependent.starts == [3.0]
        assert dep_sup.detail.startswith("ready in")
        nursery.cancel_scope.cancel()


async def test_serve_is_started_after_the_first_attempt(autojump_clock: trio.abc.Clock) -> None:
    """nursery.start(serve) returns once the first start attempt is over, not before."""
    fake = FakeResource(ready_delay=7)
    async with supervising(fake) as (sup, _):
        assert trio.current_time() == 7.0
        assert sup.state is State.RUNNING


async def test_a_dependent_of_a_stopped_resource_still_ends_its_first_attempt(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Served before its autostart=false dependency, a dependent's serve() still returns
    (waiting for the dependency) once the dependency has made its own first attempt."""
    bus = EventBus()
    base_sup = ResourceSupervisor(
        "base", FakeResource(), Settings(restart=Restart(), autostart=False), bus=bus
    )
    dep_sup = ResourceSupervisor(
        "dep", FakeResource(), Settings(restart=Restart()), bus=bus, depends_on=[base_sup]
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dep_sup.serve)
        await trio.sleep(1)  # dep is now waiting for base, which has not run yet
        await nursery.start(base_sup.serve)
        with trio.fail_after(10):
            while not dep_sup.attempted:
                await dep_sup.next_change()()
        assert dep_sup.state is State.STOPPED
        assert dep_sup.detail == "waiting for base"
        nursery.cancel_scope.cancel()


async def test_autostart_false_stays_stopped(autojump_clock: trio.abc.Clock) -> None:
    """autostart = false: started() at once, nothing launched until an operator start."""
    fake = FakeResource()
    async with supervising(fake, autostart=False) as (sup, _):
        await trio.sleep(100)
        assert fake.starts == []
        assert sup.state is State.STOPPED


async def test_stop_and_wait_uses_stop_timeout(autojump_clock: trio.abc.Clock) -> None:
    """An instance that ignores the stop request is forced after stop_timeout."""
    fake = FakeResource(ignores_stop=True)
    async with supervising(fake, stop_timeout=4) as (sup, _):
        await sup.stop_and_wait()
        assert trio.current_time() == 4.0
        assert fake.current.termination is not None
        assert fake.current.termination.signal == 9


async def test_illegal_transition_is_refused() -> None:
    """The machine refuses a transition it does not allow."""
    sup = ResourceSupervisor("r", FakeResource(), Settings(restart=Restart()), bus=EventBus())
    with pytest.raises(RuntimeError, match="STOPPED -> RUNNING"):
        sup._transition(State.RUNNING, "test")


async def test_cancelling_a_graceful_stop_kills_at_once(autojump_clock: trio.abc.Clock) -> None:
    """A forced shutdown (cancellation) cuts a slow graceful stop short with a kill."""
    fake = FakeResource(ignores_stop=True)
    async with supervising(fake, stop_timeout=100) as (sup, _):
        with trio.move_on_after(1):
            await sup.stop_and_wait()
    assert trio.current_time() == 1.0
    assert fake.current.termination is not None
    assert fake.current.termination.signal == 9


async def test_a_resource_identity_rides_on_every_event(autojump_clock: trio.abc.Clock) -> None:
    """A Deephaven full name (the resource's `full_name`) is in each event and its JSON."""

    class Named(FakeResource):
        @property
        def full_name(self) -> str:
            return "community:config:r"

    resource = Named()
    async with supervising(resource) as (sup, events):
        await in_state(sup, State.RUNNING)
    assert events
    assert all(e.identity == "community:config:r" for e in events)
    assert events[-1].to_json()["deephaven"] == "community:config:r"


def tasks_in_run() -> int:
    """Every task of this trio run, counted from the root down."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_a_running_resource_without_checks_costs_one_task(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Without health checks a RUNNING resource is awaited in its supervisor's own task."""
    before = tasks_in_run()
    async with supervising(FakeResource()) as (sup, _):
        await in_state(sup, State.RUNNING)
        await trio.sleep(1)
        # The test's nursery, and serve() alone: no watcher, no nursery of its own.
        assert tasks_in_run() == before + 1
        sup.stop()
        await in_state(sup, State.STOPPED)


async def test_a_supervisor_has_no_instance_dict() -> None:
    """One per resource: slots, not a dict per instance (the bench's memory per resource)."""
    settings = Settings(restart=DEFAULT_RESTART)  # type: ignore[arg-type]
    sup = ResourceSupervisor("r", FakeResource(), settings, bus=EventBus())
    assert not hasattr(sup, "__dict__")
