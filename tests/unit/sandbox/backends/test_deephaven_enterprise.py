"""Enterprise worker names: each environment deletes only its own workers at start-up."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from supervisor.sandbox.backends.deephaven_enterprise import worker_token

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", fullmatch=True)


def test_names_that_differ_only_in_punctuation_get_different_worker_prefixes() -> None:
    """`a.b`, `a-b` and `a_b` are three environments, not one."""
    assert len({worker_token(n) for n in ("a.b", "a-b", "a_b", "a__b", "a_db")}) == 5


@given(NAMES, NAMES)
def test_the_worker_token_is_one_to_one_and_has_no_dot(a: str, b: str) -> None:
    """No "." (it ends the prefix), and two names never share a token."""
    assert "." not in worker_token(a)
    assert (worker_token(a) == worker_token(b)) == (a == b)
