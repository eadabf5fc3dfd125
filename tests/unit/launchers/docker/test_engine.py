"""How one engine's event-stream reader waits between reconnects; whether an engine
takes new connections."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from supervisor.launchers.docker.engine import RECONNECT_BACKOFF, open_docker_engine
from supervisor.supervision.policy import backoff_delay


@given(st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_reconnects_are_immediate_then_double_from_100ms_to_5s(rand: float) -> None:
    """The first reconnect is immediate, then 0.1 s doubling, never above 5 s, no jitter."""
    delays = [backoff_delay(n, RECONNECT_BACKOFF, rand) for n in range(1, 6)]
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8]
    assert backoff_delay(50, RECONNECT_BACKOFF, rand) == 5.0


async def test_an_engine_whose_socket_takes_no_new_connection_does_not_accept_connections(
    tmp_path: Path,
) -> None:
    """`accepts_connections` is False when a fresh client cannot connect (as once a
    stopping dockerd closed its listener), and the engine client itself stays open."""
    async with open_docker_engine(f"unix://{tmp_path}/gone.sock", "test") as engine:
        assert not await engine.accepts_connections(5.0)
        assert not engine.engine_up
