"""Durations as operators write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.config.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        (3, 3),
        (0.5, 0.5),
        ("2d", 172800),
    ],
)
def test_parse(text: str | float, seconds: float) -> None:
    """Units, compound values and plain numbers of seconds are accepted."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["", "5", "5x", "ms", "-1s", "1s2", "10 parsecs", True, None, [1], -3, float("inf")]
)
def test_parse_rejects_with_a_hint(bad: object) -> None:
    """Anything else is refused with a message saying what to write."""
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


@given(st.integers(0, 10**7).map(lambda ms: ms / 1000))
def test_format_round_trips(seconds: float) -> None:
    """format_duration writes what parse_duration reads back to the same value."""
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
