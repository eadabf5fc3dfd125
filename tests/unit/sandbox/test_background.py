"""Background commands as the service keeps them: output, input, signals, limits."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from supervisor.errors import CommandNotFoundError, ConflictError
from supervisor.sandbox.background import INPUT_BACKLOG, MAX_COMMANDS, Commands
from supervisor.sandbox.instance import ExecOptions, ExecResult


async def test_output_wakes_followers_and_the_end_is_reported() -> None:
    """A follower waiting past the last piece wakes on new output and on the end."""
    command = Commands().add({"command": ["x"]})
    command.options(ExecOptions())  # what the backend gets
    woke: list[int] = []

    async def follower() -> None:
        await command.changed(0)
        woke.append(len(command.pieces))
        await command.changed(1)
        woke.append(len(command.pieces))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        command.take("stdout", b"caf\xc3")
        await trio.testing.wait_all_tasks_blocked()
        command.finish(ExecResult(0, "", "", 1.0), None)
    assert woke == [1, 1]
    command.take("stdout", b"\xa9")
    assert command.output("stdout") == "café"
    assert command.to_json()["state"] == "exited"
    assert command.to_json()["exit_code"] == 0


async def test_input_goes_to_the_backend_in_order_then_eof() -> None:
    """Writes arrive on the backend's channel; a close ends it; later writes are refused."""
    command = Commands().add({"command": ["cat"]})
    options = command.options(ExecOptions(stdin=b"first"))
    assert options.stdin == b"first"
    assert options.input is not None
    command.write(b"a")
    command.write(b"b", close=True)
    assert [piece async for piece in options.input] == [b"a", b"b"]
    with pytest.raises(ConflictError, match="closed"):
        command.write(b"c")


def test_a_command_that_does_not_read_makes_writers_wait() -> None:
    """Past the backlog a write is refused (409), never buffered without end."""
    command = Commands().add({"command": ["sleep"]})
    for _ in range(INPUT_BACKLOG):
        command.write(b"x")
    with pytest.raises(ConflictError, match="not reading"):
        command.write(b"x")


async def test_signals_go_to_the_backend_until_the_end() -> None:
    """A signal is queued for the process group; after the end it is a 409."""
    command = Commands().add({"command": ["sleep"]})
    options = command.options(ExecOptions())
    assert options.signals is not None
    command.signal(15)
    assert await options.signals.receive() == 15
    command.finish(None, RuntimeError("gone"))
    assert command.to_json()["state"] == "failed"
    with pytest.raises(ConflictError, match="ended"):
        command.signal(15)


def test_a_session_has_a_bounded_number_of_commands() -> None:
    """Ids are per session; past MAX_COMMANDS a new one is refused; unknown ids are 404."""
    commands = Commands()
    ids = [commands.add({"command": ["true"]}).id for _ in range(MAX_COMMANDS)]
    assert ids[:2] == ["cmd-1", "cmd-2"]
    with pytest.raises(ConflictError):
        commands.add({"command": ["true"]})
    assert commands.get("cmd-2").id == "cmd-2"
    with pytest.raises(CommandNotFoundError):
        commands.get("cmd-0")
