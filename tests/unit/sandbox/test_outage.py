"""An environment's outage clock (supervisor/sandbox/outage.py), on virtual time."""

from __future__ import annotations

import trio
import trio.testing

from supervisor.sandbox.outage import Outage


async def test_a_state_error_starts_the_clock_and_a_success_stops_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The offline duration runs from the first state-error failure until a bring-up works."""
    outage = Outage()
    outage.state_error(retry_interval=5)
    await trio.sleep(3)
    outage.state_error(retry_interval=5)  # a second failure does not restart it
    await trio.sleep(4)
    assert outage.duration == 7
    outage.recovered()
    assert not outage.failing
    assert outage.duration == 0


async def test_failures_that_outlast_the_grace_are_an_outage(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Rule 17: in an outage once the failures have lasted `outage_grace`."""
    outage = Outage()
    outage.state_error(retry_interval=5)
    await trio.sleep(9.5)
    assert not outage.past(grace=10)
    await trio.sleep(0.5)
    assert outage.past(grace=10)


async def test_a_user_error_paces_retries_without_starting_the_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """No outage accounting for a user error, but no new bring-up until the interval."""
    outage = Outage()
    outage.user_error(retry_interval=5)
    assert not outage.failing
    assert not outage.may_try()
    await trio.sleep(5)
    assert outage.may_try()


async def test_one_trial_per_retry_interval_is_let_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The first caller once the interval is over gets the trial; the next waits another."""
    outage = Outage()
    outage.state_error(retry_interval=5)
    assert not outage.take_trial(retry_interval=5)
    await trio.sleep(5)
    assert outage.take_trial(retry_interval=5)
    assert not outage.take_trial(retry_interval=5)
    assert outage.next_try == trio.current_time() + 5
