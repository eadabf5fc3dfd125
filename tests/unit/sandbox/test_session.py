"""File transfers are client work on a session, like exec."""

from __future__ import annotations

import io

import pytest
import trio
import trio.testing

from supervisor.errors import SessionExpiredError
from tests.fakes import FakeBackend
from tests.unit.sandbox.test_rules import environment


async def test_ending_a_session_cancels_its_file_transfer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A transfer in flight when the session ends is cancelled (it fails as expired and
    writes nothing), and the ended session takes no more."""
    backend = FakeBackend()
    async with environment(backend, max_size=1) as env:
        session = await env.open_session()
        failure: list[BaseException] = []

        async def transfer() -> None:
            try:
                await session.put_files("f", io.BytesIO(b"late"), tar=False, limit=100)
            except SessionExpiredError as exc:
                failure.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(transfer)
            await backend.uploading.wait()
            await env.close_session(session)
        assert len(failure) == 1
        assert backend.instances[session.sandbox.id].state == {}
        with pytest.raises(SessionExpiredError):
            await session.put_files("f", io.BytesIO(b"x"), tar=False, limit=100)


async def test_a_file_transfer_completes_in_a_live_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The same transfer, left to finish, writes its file."""
    backend = FakeBackend()
    async with environment(backend, max_size=1) as env:
        session = await env.open_session()
        backend.upload_gate.set()
        await session.put_files("f", io.BytesIO(b"data"), tar=False, limit=100)
        assert backend.instances[session.sandbox.id].state == {"f": "data"}
        await env.close_session(session)
