"""An environment's outage clock: how long bring-ups have failed, when the next may try.

Rule 17 of the semantics page: a bring-up that fails with a state error starts the
offline clock, and any successful one stops it. Failed bring-ups are paced by
`outage_retry_interval` (a user error paces too, without starting the clock). Past
`outage_grace`, acquires fail fast, except for one trial per retry interval, which ends
the outage if it works. Time is trio's, so tests drive it with a MockClock.
"""

from __future__ import annotations

import math

import trio


class Outage:
    """The offline clock and the bring-up pacing of one environment."""

    def __init__(self) -> None:
        self._since: float | None = None  # first state-error failure of the current run
        self._next_try = -math.inf

    @property
    def failing(self) -> bool:
        """Whether bring-ups have been failing with state errors (the clock runs)."""
        return self._since is not None

    @property
    def duration(self) -> float:
        """How long bring-ups have been failing (0 when healthy)."""
        return 0.0 if self._since is None else trio.current_time() - self._since

    def past(self, grace: float) -> bool:
        """Whether the failures have lasted `grace`: the environment is in an outage."""
        return self._since is not None and self.duration >= grace

    @property
    def next_try(self) -> float:
        """When the next bring-up may try (-inf: now)."""
        return self._next_try

    def may_try(self) -> bool:
        return trio.current_time() >= self._next_try

    def state_error(self, retry_interval: float) -> None:
        """A bring-up failed with a state error: start the clock (if stopped), pace."""
        now = trio.current_time()
        if self._since is None:
            self._since = now
        self._next_try = now + retry_interval

    def user_error(self, retry_interval: float) -> None:
        """A bring-up failed with a user error: pace, but the clock does not start."""
        self._next_try = trio.current_time() + retry_interval

    def recovered(self) -> None:
        """A bring-up worked: the clock stops."""
        self._since = None

    def take_trial(self, retry_interval: float) -> bool:
        """In an outage, one acquire per retry interval may still try a bring-up (and, if
        it works, end the outage): True for that one, which paces the next."""
        now = trio.current_time()
        if now < self._next_try:
            return False
        self._next_try = now + retry_interval
        return True
