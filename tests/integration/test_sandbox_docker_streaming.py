"""Docker sandboxes against a real engine: streamed output, env, cwd, stdin, and the kill of
a cancelled exec's process group."""

from __future__ import annotations

import math
import signal
from functools import partial

import trio

from supervisor.launchers.docker import DockerEngine
from supervisor.sandbox.instance import ExecOptions
from supervisor.sandbox.session import Session
from tests.integration.test_sandbox_docker import engine, environment

__all__ = ["engine"]  # the fixture


class Collected:
    """An output sink that keeps the pieces and lets a test wait for them."""

    def __init__(self) -> None:
        self.pieces: list[tuple[str, bytes]] = []
        self.send, self.receive = trio.open_memory_channel[tuple[str, bytes]](math.inf)

    def __call__(self, stream: str, data: bytes) -> None:
        self.pieces.append((stream, data))
        self.send.send_nowait((stream, data))

    def text(self, stream: str) -> str:
        return b"".join(d for s, d in self.pieces if s == stream).decode()


async def sh(session: Session, script: str, **options: object) -> tuple[int | None, str, str]:
    result = await session.exec(["sh", "-c", script], options=ExecOptions(**options))  # type: ignore[arg-type]
    return result.exit_code, result.stdout, result.stderr


async def test_output_streams_before_the_command_ends(engine: DockerEngine) -> None:
    """The first piece reaches the sink while the command still waits at its gate."""
    async with environment(engine) as env, env.session() as session:
        assert (await sh(session, "mkfifo gate"))[0] == 0
        sink = Collected()
        results = []

        async def streamed() -> None:
            script = "echo first; read line < gate; echo second; echo late >&2; exit 5"
            results.append(await sh(session, script, output=sink))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(streamed)
            with trio.fail_after(30):
                assert await sink.receive.receive() == ("stdout", b"first\n")
            assert not results  # still running
            await sh(session, "echo go > gate")
        assert results == [(5, "", "")]  # the output went to the sink only
        assert sink.text("stdout") == "first\nsecond\n"  # without the pid line the exec reports
        assert sink.text("stderr") == "late\n"


async def test_env_cwd_and_stdin_buffered_and_streamed(engine: DockerEngine) -> None:
    """env is added, cwd is under the workdir, stdin is fed then closed, in both forms."""
    async with environment(engine, output_limit=1 << 20) as env, env.session() as session:
        await sh(session, "mkdir -p sub/dir")
        script = 'echo "$GREETING"; pwd; cat; echo err >&2'
        options = {"env": {"GREETING": "hi"}, "cwd": "sub/dir", "stdin": b"in\n"}
        assert await sh(session, script, **options) == (0, "hi\n/work/sub/dir\nin\n", "err\n")
        sink = Collected()
        assert await sh(session, script, output=sink, **options) == (0, "", "")
        assert sink.text("stdout") == "hi\n/work/sub/dir\nin\n"
        assert sink.text("stderr") == "err\n"
        big = b"x" * 300_000  # more than the pipes hold: fed while the output is read
        code, out, _ = await sh(session, "cat", stdin=big)
        assert (code, len(out)) == (0, len(big))


async def test_streamed_output_stops_at_the_cap(engine: DockerEngine) -> None:
    """Past output_limit nothing more reaches the sink; the command runs on."""
    async with environment(engine) as env, env.session() as session:
        sink = Collected()
        script = "head -c 10000 /dev/zero | tr '\\0' a; echo after > marker"
        result = await session.exec(["sh", "-c", script], options=ExecOptions(output=sink))
        assert result.truncated
        assert sink.text("stdout") == "a" * 4096
        assert (await sh(session, "cat marker"))[1] == "after\n"


async def test_a_cancelled_exec_has_its_process_group_killed(engine: DockerEngine) -> None:
    """Cancelling a streamed exec kills what it started (the engine cannot)."""
    async with environment(engine) as env, env.session() as session:
        sink = Collected()
        script = "sleep 600 & echo $! > child; echo started; wait"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(sh, session, script, output=sink))
            with trio.fail_after(30):
                assert await sink.receive.receive() == ("stdout", b"started\n")
            nursery.cancel_scope.cancel()
        wait = 'while kill -0 "$(cat child)" 2>/dev/null; do sleep 0.05; done'
        result = await session.exec(["sh", "-c", wait], timeout=20)
        assert not result.timed_out
        assert result.exit_code == 0


async def test_input_and_signals_of_a_background_command(engine: DockerEngine) -> None:
    """More stdin as it comes, its close as EOF, and signals to the process group."""
    async with environment(engine) as env, env.session() as session:
        sink = Collected()
        more_in, more = trio.open_memory_channel[bytes](8)
        signals_in, signals = trio.open_memory_channel[int](8)
        script = "cat; trap 'echo got TERM; exit 3' TERM; echo ready; sleep 600 & wait"
        options = ExecOptions(output=sink, stdin=b"one\n", input=more, signals=signals)
        results = []

        async def background() -> None:
            results.append(await session.exec(["sh", "-c", script], options=options))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(background)
            with trio.fail_after(30):
                assert await sink.receive.receive() == ("stdout", b"one\n")
                await more_in.send(b"two\n")
                assert await sink.receive.receive() == ("stdout", b"two\n")
                await more_in.aclose()  # EOF: cat ends
                assert await sink.receive.receive() == ("stdout", b"ready\n")
                await signals_in.send(signal.SIGTERM)
        assert results[0].exit_code == 3
        assert sink.text("stdout") == "one\ntwo\nready\ngot TERM\n"
