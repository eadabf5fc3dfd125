"""When a verb's wait is over: the settle rules of `cli.verbs.Outcome`, on event lists."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.cli.verbs import Outcome, follow


def moved(name: str, to: str, detail: str = "") -> dict[str, Any]:
    return {"subject": "resource", "name": name, "to": to, "detail": detail}


def outcome(action: str, **states: str) -> Outcome:
    return Outcome(action, [{"name": n, "state": s} for n, s in states.items()])


def test_a_start_from_fatal_waits_for_a_new_attempt() -> None:
    """FATAL before the start is not its outcome: the next settled state after a move is."""
    seen = outcome("start", web="FATAL")
    assert seen.pending() == ["web"]
    assert follow(seen, iter([moved("web", "STARTING"), moved("web", "RUNNING")]))
    assert seen.state == {"web": "RUNNING"}


def test_a_start_of_a_running_resource_is_settled_at_once() -> None:
    """Nothing to wait for: the stream is not even read."""

    def never() -> Iterator[dict[str, Any]]:
        raise AssertionError("read")
        yield {}

    assert follow(outcome("start", web="RUNNING"), never())


def test_a_restart_waits_through_stopping_for_starting_then_settled() -> None:
    """RUNNING -> STOPPING -> STARTING -> RUNNING: only the last RUNNING ends the wait."""
    seen = outcome("restart", web="RUNNING")
    events = [moved("web", "STOPPING"), moved("web", "STARTING")]
    assert not follow(seen, iter(events))
    assert follow(seen, iter([moved("web", "RUNNING")]))


def test_a_stop_ends_at_stopped_and_ignores_other_resources() -> None:
    """Events of other resources or subjects do not count."""
    seen = outcome("stop", web="RUNNING")
    other = {"subject": "sandbox", "name": "web", "to": "STOPPED"}
    assert not follow(seen, iter([moved("db", "STOPPED"), other]))
    assert follow(seen, iter([moved("web", "STOPPING"), moved("web", "STOPPED")]))


def test_backoff_settles_a_start_and_keeps_its_detail() -> None:
    """BACKOFF is a settled (failed) outcome, with the reason shown."""
    seen = outcome("start", bad="STOPPED")
    assert follow(seen, iter([moved("bad", "STARTING"), moved("bad", "BACKOFF", "exit 1")]))
    assert (seen.state["bad"], seen.detail["bad"]) == ("BACKOFF", "exit 1")


def test_a_gap_in_the_stream_counts_as_movement() -> None:
    """Dropped events may have held the move: the state seen next decides."""
    seen = outcome("restart", web="RUNNING")
    follow(seen, iter([{"gap": {"since": 1, "first_available": 9}}]))
    assert seen.pending() == []


def test_a_deadline_ends_the_wait_unsettled() -> None:
    """The stream's TimeoutError (the deadline) is a False, not a crash."""

    def slow() -> Iterator[dict[str, Any]]:
        yield moved("web", "STARTING")
        raise TimeoutError

    seen = outcome("start", web="STOPPED")
    assert not follow(seen, slow())
    assert seen.pending() == ["web"]


@pytest.mark.parametrize("action", ["start", "restart"])
def test_exited_settles_a_start(action: str) -> None:
    """A one-shot program that ended well (EXITED) is a settled start."""
    seen = outcome(action, job="STOPPED")
    assert follow(seen, iter([moved("job", "STARTING"), moved("job", "EXITED")]))
