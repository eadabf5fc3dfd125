"""A container resource's output against a real daemon and a real Docker engine: read back
from the engine's log stream, each stream apart, followed live, with the engine rotating."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import trio

from supervisor.api.client import Client
from supervisor.launchers.docker import DockerEngine
from supervisor.runtime.daemon import Daemon
from tests.integration.conftest import run_cli
from tests.integration.test_api import running, unix
from tests.integration.test_docker import IMAGE, docker_cli, inspect
from tests.integration.test_logs import tail_of

TALKER = "echo out 1; echo err 1 >&2; echo out 2; exec sleep infinity"


@asynccontextmanager
async def talking(tmp_path: Path, extra: str = "") -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon supervising one container that printed to both streams; its name."""
    name = f"talker-{uuid.uuid4().hex[:8]}"
    toml = f"""
[resources.{name}]
kind = "container"
image = "{IMAGE}"
command = ["sh", "-c", "{TALKER}"]
network = "none"
stop_timeout = "2s"
{extra}
"""
    try:
        async with running(tmp_path, toml) as daemon:
            yield daemon, name
    finally:
        leftover = await docker_cli("ps", "-aq", "--filter", f"label=supervisor.resource={name}")
        if leftover:
            await docker_cli("rm", "-f", *leftover.split(), check=False)
        assert not leftover, "the daemon left its container behind"


def engine_of(daemon: Daemon) -> DockerEngine:
    assert daemon.engines is not None
    engine = daemon.engines.get(None)
    assert engine is not None
    return engine


async def streams_open(engine: DockerEngine, count: int) -> None:
    """Return once `count` log streams are being read (polled: a thread ends unannounced)."""
    with trio.fail_after(20):
        while engine.log_streams != count:  # noqa: ASYNC110 - a worker thread's end has no event
            await trio.sleep(0.02)


async def container_of(daemon: Daemon, name: str) -> str:
    async with unix(daemon) as api:
        container: str = (await api.get(f"/v1/resources/{name}")).json()["container_id"]
    return container


async def test_stdout_and_stderr_come_apart_from_the_engine_which_rotates_them(
    tmp_path: Path,
) -> None:
    """`logs` shows a container's stdout or stderr alone, and its `log` settings become the
    engine's json-file `max-size` and `max-file` (backups + 1)."""
    async with talking(tmp_path, 'log = { max_bytes = "64k", backups = 2 }') as (daemon, name):
        assert await tail_of(daemon, name, "out 2") == "out 1\nout 2\n"
        assert await tail_of(daemon, name, "err 1", stream="stderr") == "err 1\n"
        sock = str(tmp_path / "control.sock")
        cli = await trio.to_thread.run_sync(
            run_cli, "logs", name, "--stderr", "-n", "5", "--socket", sock
        )
        assert (cli.returncode, cli.stdout) == (0, "err 1\n")
        cli = await trio.to_thread.run_sync(run_cli, "logs", name, "-n", "1", "--socket", sock)
        assert (cli.returncode, cli.stdout) == (0, "out 2\n")
        info = await inspect(await container_of(daemon, name))
        assert info["HostConfig"]["LogConfig"] == {  # type: ignore[index]
            "Type": "json-file",
            "Config": {"max-size": "65536", "max-file": "3"},
        }
    assert not (tmp_path / "state" / "logs").exists()  # the daemon kept nothing itself


def follow_one_piece(sock: Path, name: str) -> bytes:
    """Follow `name` with no tail; return the first piece it prints."""
    with (
        Client.connect(socket_path=sock) as client,
        closing(client.logs(name, lines=0, follow=True)) as pieces,
    ):
        for piece in pieces:
            if piece:
                return piece
    raise AssertionError("the follow ended before the container printed")


async def test_follow_shows_new_output_and_ends_when_the_client_or_the_daemon_leaves(
    tmp_path: Path,
) -> None:
    """A follow shows what the container prints next; the engine's stream is closed once
    the client leaves, and a follow still open when the daemon stops ends with it."""
    async with talking(tmp_path) as (daemon, name):
        await tail_of(daemon, name, "out 2")
        engine = engine_of(daemon)
        assert daemon.api is not None
        sock = daemon.api.socket_path
        container = await container_of(daemon, name)
        async with trio.open_nursery() as nursery:
            got: list[bytes] = []

            async def follow() -> None:
                piece = await trio.to_thread.run_sync(follow_one_piece, sock, name)
                got.append(piece)

            nursery.start_soon(follow)
            await streams_open(engine, 1)
            # Written by PID 1's descriptor: the container's own stdout.
            await docker_cli("exec", container, "sh", "-c", "echo later > /proc/1/fd/1")
        assert got == [b"later\n"]
        await streams_open(engine, 0)  # the client left: the engine's stream was closed

        env = {**os.environ, "SUPERVISOR_SOCKET": str(sock)}
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor", "logs", "-f", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        assert proc.stdout is not None
        seen = b""
        with trio.fail_after(20):
            while b"later\n" not in seen:
                seen += await proc.stdout.receive_some(4096)
        await streams_open(engine, 1)
        daemon.request_stop()
        with trio.fail_after(20):  # the follow ends with the daemon, which stops promptly
            assert await proc.wait() == 0
        await proc.stdout.aclose()
    assert seen == b"out 1\nout 2\nlater\n"


async def test_a_short_stdout_tail_is_found_behind_a_burst_of_stderr(tmp_path: Path) -> None:
    """The engine counts `tail` over both streams: `logs -n 1` of stdout still shows the
    last stdout line when stderr wrote many lines after it."""
    name = f"burst-{uuid.uuid4().hex[:8]}"
    toml = f"""
[resources.{name}]
kind = "container"
image = "{IMAGE}"
command = ["sh", "-c", "echo only; i=0; while [ $i -lt 40 ]; do echo e$i >&2; i=$((i+1)); done; echo done >&2; exec sleep infinity"]
network = "none"
stop_timeout = "2s"
"""
    try:
        async with running(tmp_path, toml) as daemon:
            await tail_of(daemon, name, "done", stream="stderr")
            sock = str(tmp_path / "control.sock")
            cli = await trio.to_thread.run_sync(run_cli, "logs", name, "-n", "1", "--socket", sock)
            assert (cli.returncode, cli.stdout) == (0, "only\n")
            cli = await trio.to_thread.run_sync(
                run_cli, "logs", name, "--stderr", "-n", "2", "--socket", sock
            )
            assert (cli.returncode, cli.stdout) == (0, "e39\ndone\n")
    finally:
        leftover = await docker_cli("ps", "-aq", "--filter", f"label=supervisor.resource={name}")
        if leftover:
            await docker_cli("rm", "-f", *leftover.split(), check=False)
