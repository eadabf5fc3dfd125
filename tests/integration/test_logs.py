"""Program output against a real daemon: kept in rotated files, shown by the API and the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import structlog
import trio

from supervisor.api.client import Client
from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.conftest import run_cli
from tests.integration.test_api import running, unix


def talker(tmp_path: Path, script: str, extra: str = "") -> str:
    (tmp_path / "talker.py").write_text(script)
    return f"""
[resources.talker]
kind = "process"
command = ["{sys.executable}", "{tmp_path}/talker.py"]
stop_timeout = "2s"
{extra}
"""


TWO_STREAMS = """
import sys, time
print("to stdout 1", flush=True)
print("to stderr 1", file=sys.stderr, flush=True)
print("to stdout 2", flush=True)
time.sleep(1000)
"""


def follow_until(sock: Path, name: str, stream: str, wanted: bytes | None) -> None:
    """Follow `stream` through the client until it shows `wanted` (None: any new piece)."""
    lines = 0 if wanted is None else 100
    with Client.connect(socket_path=sock) as client:
        seen = b""
        with closing(client.logs(name, stream=stream, lines=lines, follow=True)) as pieces:
            for piece in pieces:
                seen += piece
                if wanted is None or wanted in seen:
                    return
    raise AssertionError(f"the stream of {name} ended before it showed {wanted!r}")


async def tail_of(daemon: Daemon, name: str, wanted: str, stream: str = "stdout") -> str:
    """Follow `stream` until it shows `wanted` (bounded), then return its tail."""
    assert daemon.api is not None
    sock = daemon.api.socket_path
    with trio.fail_after(20):
        await trio.to_thread.run_sync(
            follow_until, sock, name, stream, wanted.encode(), abandon_on_cancel=True
        )
    async with unix(daemon) as api:
        reply = await api.get(f"/v1/resources/{name}/logs", params={"stream": stream})
        assert reply.status_code == 200, reply.text
        return reply.text


async def flowing(daemon: Daemon, name: str) -> None:
    """Return once `name` prints something new (its follow stream gets a piece)."""
    assert daemon.api is not None
    sock = daemon.api.socket_path
    with trio.fail_after(30):
        await trio.to_thread.run_sync(
            follow_until, sock, name, "stdout", None, abandon_on_cancel=True
        )


async def test_stdout_and_stderr_are_kept_apart_in_files_and_shown_by_logs(tmp_path: Path) -> None:
    """Each stream goes to its own file under log_dir, and `logs` shows either one."""
    logs = tmp_path / "logs"
    async with running(
        tmp_path, talker(tmp_path, TWO_STREAMS), daemon_extra=f'log_dir = "{logs}"\n'
    ) as daemon:
        out = await tail_of(daemon, "talker", "to stdout 2")
        assert out == "to stdout 1\nto stdout 2\n"
        err = await tail_of(daemon, "talker", "to stderr 1", stream="stderr")
        assert err == "to stderr 1\n"
        assert (logs / "talker.stdout.log").read_text() == out
        assert (logs / "talker.stderr.log").read_text() == err
        sock = str(tmp_path / "control.sock")
        cli = await trio.to_thread.run_sync(run_cli, "logs", "talker", "--socket", sock)
        assert (cli.returncode, cli.stdout) == (0, out)
        cli = await trio.to_thread.run_sync(
            run_cli, "logs", "talker", "--stderr", "-n", "1", "--socket", sock
        )
        assert (cli.returncode, cli.stdout) == (0, err)
        async with unix(daemon) as api:
            one = await api.get("/v1/resources/talker/logs", params={"lines": 1})
            assert one.text == "to stdout 2\n"


async def test_program_output_stays_out_of_the_daemon_log_by_default(tmp_path: Path) -> None:
    """With log_output unset, not one program line reaches the daemon's own log."""
    with structlog.testing.capture_logs() as captured:
        async with running(tmp_path, talker(tmp_path, TWO_STREAMS)) as daemon:
            await tail_of(daemon, "talker", "to stdout 2")
            await tail_of(daemon, "talker", "to stderr 1", stream="stderr")
    assert any(e["event"] == "daemon_ready" for e in captured)  # the capture works
    assert not [e for e in captured if "to stdout" in str(e) or "to stderr" in str(e)]


async def test_log_output_still_relays_lines_when_asked(tmp_path: Path) -> None:
    """log_output = true relays lines to the daemon's log, and the files are kept as well."""
    with structlog.testing.capture_logs() as captured:
        async with running(tmp_path, talker(tmp_path, TWO_STREAMS, "log_output = true")) as daemon:
            await tail_of(daemon, "talker", "to stdout 2")
            # The lines of a piece are relayed as the piece is kept: already there.
            assert any(e.get("line") == "to stdout 2" for e in captured)
    assert (tmp_path / "state" / "logs" / "talker.stdout.log").exists()  # default log_dir


ROTATING = """
import time
for i in range(2000):
    print(f"line {i:05d} " + "x" * 40, flush=i % 50 == 0)
print("the end", flush=True)
time.sleep(1000)
"""


async def test_rotation_keeps_backups_files_and_the_newest_lines(tmp_path: Path) -> None:
    """At a small max_bytes, files rotate: `backups` old ones are kept, lines stay whole,
    and the newest lines are in the current file."""
    logs = tmp_path / "logs"
    toml = talker(tmp_path, ROTATING, 'log = { max_bytes = "8k", backups = 2 }')
    async with running(tmp_path, toml, daemon_extra=f'log_dir = "{logs}"\n') as daemon:
        await tail_of(daemon, "talker", "the end")
        current = (logs / "talker.stdout.log").read_text()
        assert current.endswith("line 01999 " + "x" * 40 + "\nthe end\n")
        names = sorted(p.name for p in logs.iterdir() if p.name.startswith("talker.stdout"))
        assert names == ["talker.stdout.log", "talker.stdout.log.1", "talker.stdout.log.2"]
        older = (logs / "talker.stdout.log.1").read_text() + current
        older = (logs / "talker.stdout.log.2").read_text() + older
        numbers = [int(line.split()[1]) for line in older.splitlines() if line.startswith("line")]
        assert numbers == list(range(numbers[0], 2000))  # contiguous, whole, newest last
        for name in names:
            assert 0 < (logs / name).stat().st_size <= 8192
        async with unix(daemon) as api:
            many = await api.get("/v1/resources/talker/logs", params={"lines": 300})
        assert many.text.splitlines()[-1] == "the end"
        assert len(many.text.splitlines()) == 300  # read back across the three files


FOLLOWED = """
import sys
print("before", flush=True)
with open(sys.argv[1]) as fifo:
    fifo.read()
print("after", flush=True)
import time
time.sleep(1000)
"""


async def test_logs_follow_sees_a_line_printed_after_it_started(tmp_path: Path) -> None:
    """`logs -f` prints the tail, then a line printed later; Ctrl-C ends it quietly."""
    fifo = tmp_path / "gate"
    os.mkfifo(fifo)
    (tmp_path / "talker.py").write_text(FOLLOWED)
    toml = f"""
[resources.talker]
kind = "process"
command = ["{sys.executable}", "{tmp_path}/talker.py", "{fifo}"]
stop_timeout = "2s"
"""
    async with running(tmp_path, toml) as daemon:
        await tail_of(daemon, "talker", "before")
        env = {**os.environ, "SUPERVISOR_SOCKET": str(tmp_path / "control.sock")}
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor", "logs", "-f", "talker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        assert proc.stderr is not None
        seen = b""
        with trio.fail_after(20):
            while b"before\n" not in seen:
                seen += await proc.stdout.receive_some(4096)
            await trio.to_thread.run_sync(fifo.write_text, "go")  # the program goes on
            while b"after\n" not in seen:
                seen += await proc.stdout.receive_some(4096)
            proc.send_signal(signal.SIGINT)
            assert await proc.wait() == 0
            assert await proc.stderr.receive_some(4096) == b""  # quietly
        assert seen == b"before\nafter\n"
        await proc.stdout.aclose()
        await proc.stderr.aclose()


async def test_unknown_name_and_bad_stream_are_refused_through_the_error_table(
    tmp_path: Path,
) -> None:
    """An unknown name is a 404 (CLI exit 1), a bad stream a 400, in the API's error shape."""
    async with running(tmp_path) as daemon:
        async with unix(daemon) as api:
            ghost = await api.get("/v1/resources/ghost/logs")
            assert ghost.status_code == 404
            assert ghost.json()["error"]["code"] == "not_found"
            bad = await api.get("/v1/resources/sleeper/logs", params={"stream": "stdin"})
            assert bad.status_code == 400
            assert bad.json()["error"]["code"] == "bad_request"
        sock = str(tmp_path / "control.sock")
        cli = await trio.to_thread.run_sync(run_cli, "logs", "ghost", "--socket", sock)
        assert cli.returncode == 1
        assert "no resource named 'ghost'" in cli.stderr


FLOOD = """
import sys
piece = (b"y" * 1023 + b"\\n") * 64
write = sys.stdout.buffer.write
while True:
    write(piece)
"""


async def test_a_flood_does_not_starve_a_siblings_restarts(tmp_path: Path) -> None:
    """While one child prints as fast as it can (its output kept and rotated), a sibling
    is restarted again and again, and the flood keeps flowing between the restarts."""
    logs = tmp_path / "logs"
    toml = (
        talker(tmp_path, FLOOD, 'log = { max_bytes = "1m", backups = 1 }')
        + """
[resources.quiet]
kind = "process"
command = ["sleep", "1000"]
stop_timeout = "2s"
"""
    )
    async with running(tmp_path, toml, daemon_extra=f'log_dir = "{logs}"\n') as daemon:
        await flowing(daemon, "talker")
        client = Client.connect(socket_path=tmp_path / "control.sock")
        for n in range(1, 6):
            await trio.to_thread.run_sync(client.restart, "quiet")
            with trio.fail_after(30):
                await daemon.supervisors["quiet"].wait_for(
                    lambda s, n=n: s.restarts >= n and s.state is State.RUNNING  # type: ignore[misc]
                )
            await flowing(daemon, "talker")  # and the flood goes on between restarts
        client.close()
        assert daemon.supervisors["talker"].state is State.RUNNING
        assert daemon.supervisors["talker"].restarts == 0
        assert (logs / "talker.stdout.log.1").exists()  # it was kept and rotated meanwhile
