"""What the sandbox tools hand an agent: capped output, environments it can choose from."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supervisor.mcp.sandbox_tools import MAX_OUTPUT, Capture, clip, environment_view


def test_odd_limits_clip_alike_piece_by_piece_and_whole() -> None:
    """A text of exactly an odd limit is whole both ways; one more is cut both ways."""
    for text in ("abc", "abcd"):
        capture = Capture(3)
        for char in text:
            capture.add(char)
        assert capture.text() == clip(text, 3)


def test_short_output_is_returned_whole() -> None:
    """Output within the cap is untouched and not marked truncated."""
    assert clip("hello\n") == ("hello\n", False)


@given(st.text(min_size=1), st.integers(min_value=2, max_value=200))
def test_long_output_keeps_its_head_and_tail_within_the_cap(text: str, limit: int) -> None:
    """Clipped output keeps both ends, says how much was cut, and is marked truncated."""
    clipped, cut = clip(text, limit)
    assert cut == (len(text) > limit)
    if cut:
        half = limit // 2
        assert clipped.startswith(text[:half])
        assert clipped.endswith(text[-half:])
        assert f"{len(text) - 2 * half} characters cut" in clipped


def test_the_default_cap_is_64_kib_of_characters() -> None:
    """An exec's stream is capped at MAX_OUTPUT characters plus the marker."""
    clipped, cut = clip("x" * (MAX_OUTPUT * 3))
    assert cut
    assert len(clipped) < MAX_OUTPUT + 100


def test_an_environment_shows_its_free_capacity() -> None:
    """Free is max_size minus active sessions, never negative; ready counts READY only."""
    env = {
        "name": "box",
        "backend": "process",
        "status": "ONLINE",
        "sandboxes": {"READY": 1, "IN_USE": 3},
        "max_size": 4,
        "active_sessions": 3,
        "waiters": 0,
        "error": None,
    }
    view = environment_view(env)
    assert (view["ready"], view["free"]) == (1, 1)
    assert environment_view({**env, "active_sessions": 6})["free"] == 0


@given(st.lists(st.text(max_size=10), max_size=20), st.integers(min_value=2, max_value=64))
def test_output_captured_piece_by_piece_is_clipped_as_a_whole(
    pieces: list[str], limit: int
) -> None:
    """Capture keeps only head and tail as output streams, and ends as clip would."""
    capture = Capture(limit)
    for piece in pieces:
        capture.add(piece)
        assert len(capture.head) + len(capture.tail) <= limit
    assert capture.text() == clip("".join(pieces), limit)
