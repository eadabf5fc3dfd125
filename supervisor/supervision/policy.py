"""Restart policy as pure functions of (attempt, now, settings): backoff, intensity, exits.

The backoff follows supervisord where it is right and fixes where it is not: the first
failure after a stable run restarts at once (a long-running child that dies is back within
milliseconds), then each further consecutive failure doubles the wait (`initial`, then
`initial * factor`, ...), capped at `max`. Jitter only shortens a delay, so `max` is a hard
bound that operators can rely on. Intensity is a sliding window on `trio.current_time()`,
like Erlang/OTP supervisors: more than `max_restarts` restarts within `within` is FATAL.
"""

from __future__ import annotations

import signal
from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from supervisor.supervision.states import State


class BackoffSettings(Protocol):
    @property
    def initial(self) -> float: ...
    @property
    def factor(self) -> float: ...
    @property
    def max(self) -> float: ...
    @property
    def jitter(self) -> float: ...


def backoff_delay(failures: int, settings: BackoffSettings, rand: float) -> float:
    """Seconds to wait before restarting after the `failures`-th consecutive failure.

    Args:
        failures: consecutive failures so far, counting this one (1 = first).
        settings: initial, factor, max and jitter.
        rand: a uniform sample in [0, 1) that scales the jitter.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    if failures == 1:
        return 0.0
    exponent = failures - 2
    # factor ** exponent overflows long before the cap matters; stop growing at the cap.
    base = settings.initial
    for _ in range(exponent):
        base *= settings.factor
        if base >= settings.max:
            break
    base = min(base, settings.max)
    return base * (1.0 - settings.jitter * rand)


class RestartIntensity:
    """A sliding window of restart times; `record` says whether the limit is exceeded."""

    __slots__ = ("_times", "max_restarts", "within")

    def __init__(self, max_restarts: int, within: float) -> None:
        self.max_restarts = max_restarts
        self.within = within
        self._times: list[float] = []  # sorted; a deque cost 0.7 KiB per resource

    def record(self, now: float) -> bool:
        """Count a restart at `now`; True when more than `max_restarts` fall within the window."""
        self._times.append(now)
        self._expire(now)
        return len(self._times) > self.max_restarts

    def count(self, now: float) -> int:
        """Restarts still inside the window at `now`."""
        self._expire(now)
        return len(self._times)

    def reset(self) -> None:
        self._times.clear()

    def _expire(self, now: float) -> None:
        # A restart exactly `within` seconds old has left the window. (Compared as
        # `now - t`, not against `now - within`: the two round differently.)
        cut = 0
        while cut < len(self._times) and now - self._times[cut] >= self.within:
            cut += 1
        del self._times[:cut]


@dataclass(frozen=True, slots=True)
class Termination:
    """How a run ended: `reason` is a bounded label, `detail` is for people."""

    reason: str
    detail: str
    exit_code: int | None = None
    signal: int | None = None


def describe_exit(returncode: int) -> Termination:
    """Turn a POSIX return code (negative = killed by signal) into a Termination."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return Termination("signal", f"killed by {name}", signal=-returncode)
    return Termination("exit_code", f"exited with code {returncode}", exit_code=returncode)


def exit_is_success(term: Termination, success_exit_codes: Collection[int]) -> bool:
    """An exit is a success only by an expected exit code (never by a signal)."""
    return term.exit_code is not None and term.exit_code in success_exit_codes


def should_restart(policy: str, *, success: bool) -> bool:
    """Whether a run that ended by itself is started again under `policy`."""
    if policy == "always":
        return True
    if policy == "on-failure":
        return not success
    return False


class RestartSettings(Protocol):
    @property
    def policy(self) -> str: ...
    @property
    def reset_after(self) -> float: ...
    @property
    def backoff(self) -> BackoffSettings: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """What follows a run that ended: `next` is EXITED, FATAL or BACKOFF (after `delay`)."""

    next: State
    failures: int
    delay: float = 0.0


def decide(
    settings: RestartSettings,
    intensity: RestartIntensity,
    now: float,
    *,
    failures: int,
    ran_for: float | None,
    success: bool,
    rand: float,
) -> Verdict:
    """The restart decision: a run of `reset_after` or more clears the failure count; the
    policy may end it (EXITED); past the intensity limit it is FATAL; else a backoff.

    Records the restart in `intensity` (its window is the decision's only state).
    """
    if ran_for is not None and ran_for >= settings.reset_after:
        failures = 0
    if not should_restart(settings.policy, success=success):
        return Verdict(State.EXITED, failures)
    failures += 1
    if intensity.record(now):
        return Verdict(State.FATAL, failures)
    return Verdict(State.BACKOFF, failures, backoff_delay(failures, settings.backoff, rand))
