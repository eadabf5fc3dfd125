"""How one engine's event-stream reader waits between reconnects."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supervisor.launchers.docker.engine import RECONNECT_BACKOFF
from supervisor.supervision.policy import backoff_delay


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_reconnects_are_immediate_then_double_from_100ms_to_5s(rand: float) -> None:
    """The first reconnect is immediate, then 0.1 s doubling, never above 5 s, no jitter."""
    delays = [backoff_delay(n, RECONNECT_BACKOFF, rand) for n in range(1, 6)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8]
    assert backoff_delay(50, RECONNECT_BACKOFF, rand) == 5.0
