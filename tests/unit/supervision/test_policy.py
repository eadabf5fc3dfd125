"""Pure restart policy: backoff bounds and shape, the intensity window, exit classification."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.supervision.policy import (
    RestartIntensity,
    backoff_delay,
    describe_exit,
    exit_is_success,
    should_restart,
)
from tests.fakes import Backoff

backoffs = st.builds(
    Backoff,
    initial=st.floats(0.001, 100),
    factor=st.floats(1.0, 10),
    max=st.floats(0.001, 10_000),
    jitter=st.floats(0.0, 0.99),
).filter(lambda b: b.max >= b.initial)
attempts = st.integers(1, 10_000)
rands = st.floats(0.0, 1.0, exclude_max=True)


@given(backoffs, attempts, rands)
def test_backoff_never_exceeds_max(b: Backoff, n: int, r: float) -> None:
    """No delay is ever longer than `max`, jitter included."""
    assert 0.0 <= backoff_delay(n, b, r) <= b.max


@given(backoffs, attempts)
def test_backoff_is_monotone_without_jitter(b: Backoff, n: int) -> None:
    """Without jitter, each further failure waits at least as long as the one before."""
    plain = Backoff(b.initial, b.factor, b.max, 0.0)
    assert backoff_delay(n + 1, plain, 0.5) >= backoff_delay(n, plain, 0.5)


@given(backoffs, st.integers(2, 10_000), rands)
def test_jitter_only_shortens_within_its_fraction(b: Backoff, n: int, r: float) -> None:
    """Jitter takes at most `jitter` of the delay off, and never adds."""
    plain = backoff_delay(n, Backoff(b.initial, b.factor, b.max, 0.0), 0.0)
    jittered = backoff_delay(n, b, r)
    assert plain * (1 - b.jitter) - 1e-9 <= jittered <= plain + 1e-9


def test_backoff_shape() -> None:
    """0, initial, initial*factor, ... capped at max."""
    b = Backoff(initial=1, factor=2, max=10, jitter=0)
    assert [backoff_delay(n, b, 0.0) for n in range(1, 8)] == [0, 1, 2, 4, 8, 10, 10]


def test_backoff_rejects_attempt_zero() -> None:
    """Attempts count from one."""
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, Backoff(), 0.0)


def test_intensity_window_is_exact_at_its_edges() -> None:
    """A restart exactly `within` old has left the window; one a hair younger has not."""
    window = RestartIntensity(max_restarts=2, within=10.0)
    assert not window.record(0.0)
    assert not window.record(5.0)
    assert window.record(9.999)  # three within 10s: exceeded
    window = RestartIntensity(max_restarts=2, within=10.0)
    window.record(0.0)
    window.record(5.0)
    assert not window.record(10.0)  # the one at 0 just expired
    assert window.count(10.0) == 2


@given(
    st.integers(1, 20), st.floats(0.1, 100), st.lists(st.floats(0, 1000), min_size=1, max_size=60)
)
def test_intensity_matches_a_brute_force_count(
    limit: int, within: float, gaps: list[float]
) -> None:
    """record() is exceeded exactly when more than max_restarts fall in (now - within, now]."""
    window = RestartIntensity(limit, within)
    times: list[float] = []
    now = 0.0
    for gap in gaps:
        now += gap
        times.append(now)
        in_window = [t for t in times if now - t < within]
        assert window.record(now) == (len(in_window) > limit)


def test_describe_exit() -> None:
    """Return codes become a bounded reason and a human detail."""
    assert describe_exit(3).reason == "exit_code"
    assert describe_exit(3).detail == "exited with code 3"
    killed = describe_exit(-9)
    assert (killed.reason, killed.signal, killed.detail) == ("signal", 9, "killed by SIGKILL")


def test_exit_success_and_policy() -> None:
    """Only listed exit codes succeed; on-failure restarts only failures."""
    ok = frozenset({0, 2})
    assert exit_is_success(describe_exit(2), ok)
    assert not exit_is_success(describe_exit(1), ok)
    assert not exit_is_success(describe_exit(-15), ok)
    assert should_restart("always", success=True)
    assert should_restart("on-failure", success=False)
    assert not should_restart("on-failure", success=True)
    assert not should_restart("never", success=False)
