"""DaemonLink: what a cancelled call leaves behind, against a hand-written fake client."""

from __future__ import annotations

import threading
from typing import Any

import trio

from supervisor.api.client import Client
from supervisor.mcp.link import DaemonLink


class FakeClient:
    """Records aborts and releases; `acquire` blocks until the test lets it answer."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.answer = threading.Event()
        self.aborted = threading.Event()
        self.released: list[str] = []
        self.release_done = threading.Event()

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def acquire(self) -> dict[str, Any]:
        self.entered.set()
        assert self.answer.wait(10)
        return {"session_id": "box-session-1"}

    def release(self, session_id: str) -> None:
        self.released.append(session_id)
        self.release_done.set()

    def abort(self) -> None:
        self.aborted.set()
        self.answer.set()  # as a shut-down socket would wake the blocked call


def link_to(fake: FakeClient) -> DaemonLink:
    return DaemonLink(lambda: fake)  # type: ignore[arg-type,return-value]


def release(client: Client, session: dict[str, Any]) -> None:
    client.release(session["session_id"])


async def test_a_call_cancelled_in_flight_aborts_its_client() -> None:
    """A cancelled call without undo aborts its client at once (its thread wakes)."""
    fake = FakeClient()
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link_to(fake).call, lambda c: c.acquire())
            await trio.to_thread.run_sync(fake.entered.wait, 10)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert fake.aborted.is_set()
    assert fake.released == []


async def test_a_cancelled_call_with_undo_undoes_its_late_answer() -> None:
    """A cancelled acquire is not aborted; its answer, when it comes, is released."""
    fake = FakeClient()
    with trio.move_on_after(10) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: link_to(fake).call(lambda c: c.acquire(), undo=release))
            await trio.to_thread.run_sync(fake.entered.wait, 10)
            nursery.cancel_scope.cancel()
    assert not scope.cancelled_caught
    assert not fake.aborted.is_set()
    fake.answer.set()
    assert await trio.to_thread.run_sync(fake.release_done.wait, 10)
    assert fake.released == ["box-session-1"]


async def test_an_uncancelled_call_with_undo_keeps_its_answer() -> None:
    """Undo applies only to a cancelled call."""
    fake = FakeClient()
    fake.answer.set()
    answer = await link_to(fake).call(lambda c: c.acquire(), undo=release)
    assert answer == {"session_id": "box-session-1"}
    assert fake.released == []
