"""The local launcher: output relay, scrubbed environment, credentials, parent death."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from supervisor.errors import MisconfiguredError, StartError
from supervisor.launchers import guardian
from supervisor.launchers.local import LocalLauncher, resolve_credentials, scrubbed_environment
from supervisor.launchers.relay import MAX_LINE
from tests.integration.conftest import alive, process_gone


async def run_collect(
    launcher: LocalLauncher, argv: list[str], **kwargs: object
) -> tuple[list[tuple[str, str]], int | None]:
    lines: list[tuple[str, str]] = []
    handle = await launcher.spawn(
        argv, on_output=lambda stream, line: lines.append((stream, line)), **kwargs
    )  # type: ignore[arg-type]
    with trio.fail_after(10):
        term = await handle.wait()
        await handle.output_done.wait()  # the relay may still be draining the pipes
    return lines, term.exit_code


async def test_output_lines_are_relayed_and_long_lines_cut(launcher: LocalLauncher) -> None:
    """stdout and stderr arrive as lines; a line longer than MAX_LINE is truncated, not buffered."""
    script = f"import sys; print('hello'); print('x' * {MAX_LINE * 3}); print('oops', file=sys.stderr, flush=True); print('done', flush=True)"
    lines, code = await run_collect(launcher, ["python3", "-c", script])
    assert code == 0
    assert ("stdout", "hello") in lines
    assert ("stderr", "oops") in lines
    long = [line for s, line in lines if line.startswith("xxx")]
    assert long == ["x" * MAX_LINE + " [truncated]"]


async def test_a_long_line_written_in_pieces_is_cut_once(launcher: LocalLauncher) -> None:
    """A line that arrives over many reads is truncated once and the next line is intact."""
    script = (
        "import sys, time\n"
        "for _ in range(5):\n"
        f"    sys.stdout.write('y' * {MAX_LINE}); sys.stdout.flush(); time.sleep(0.02)\n"
        "print(); print('after'); print('done')"
    )
    lines, _ = await run_collect(launcher, ["python3", "-c", script])
    assert [line for _, line in lines] == ["y" * MAX_LINE + " [truncated]", "after", "done"]


async def test_environment_is_scrubbed_of_systemd_variables(
    launcher: LocalLauncher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOTIFY_SOCKET and friends never reach a child; configured variables do."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    env = scrubbed_environment({"GREETING": "hi"})
    script = "import os; print(sorted(k for k in os.environ if k in {'NOTIFY_SOCKET','WATCHDOG_USEC','GREETING'})); print('done')"
    lines, _ = await run_collect(launcher, ["python3", "-c", script], env=env)
    assert ("stdout", "['GREETING']") in lines


async def test_children_run_as_the_configured_user(launcher: LocalLauncher) -> None:
    """As root, `user` switches the child's uid and gid (the suite runs as root in CI)."""
    assert os.geteuid() == 0, "the test suite runs as root (CI does)"
    nobody = pwd.getpwnam("nobody")
    lines, _ = await run_collect(
        launcher,
        ["sh", "-c", "id -u; id -g; echo done"],
        credentials=resolve_credentials("nobody", None),
    )
    assert [line for _, line in lines[:2]] == [str(nobody.pw_uid), str(nobody.pw_gid)]


def test_unknown_group_is_misconfigured() -> None:
    """A group that does not exist is a configuration error, not a start failure."""
    with pytest.raises(MisconfiguredError, match="unknown group"):
        resolve_credentials(None, "no-such-group-here")


async def test_missing_working_directory_is_named(launcher: LocalLauncher) -> None:
    """A cwd that does not exist is reported as such, not as a missing command."""
    with pytest.raises(StartError, match="working directory '/nonexistent' does not exist"):
        await launcher.spawn(["true"], cwd="/nonexistent")  # type: ignore[arg-type]


async def test_children_lead_their_own_session(launcher: LocalLauncher) -> None:
    """Every child leads its own session and group, and stop_signal reaches it."""
    handle = await launcher.spawn(["sleep", "1000"])
    assert os.getpgid(handle.pid) == handle.pid
    assert os.getsid(handle.pid) == handle.pid
    term = await handle.stop(1.0)
    assert term.signal == 15


DIE_WITH_PARENT = """
import os, signal, sys, trio
from supervisor.launchers.local import open_local_launcher

async def main():
    async with open_local_launcher() as launcher:
        if sys.argv[1] == "guardian-killed":  # a new guardian must take over, knowing all
            handle = await launcher.spawn(["sh", "-c", "sleep 1000 & wait"])
            os.kill(launcher._guardian.popen.pid, signal.SIGKILL)
            old = launcher._guardian
            while launcher._guardian is old or launcher._guardian is None:
                await trio.sleep(0.01)
        else:
            handle = await launcher.spawn(["sh", "-c", "sleep 1000 & wait"])
        await trio.sleep(0.05)  # let sh start its grandchild
        print(handle.pid, *open(f"/proc/{handle.pid}/task/{handle.pid}/children").read().split(), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs

trio.run(main)
"""


@pytest.mark.parametrize("scenario", ["plain", "guardian-killed"])
async def test_children_and_grandchildren_die_with_a_killed_parent(scenario: str) -> None:
    """SIGKILL the parent: the guardian kills every child's group, even after a respawn."""
    result = await trio.run_process(
        [sys.executable, "-c", DIE_WITH_PARENT, scenario], capture_stdout=True, check=False
    )
    assert result.returncode == -signal.SIGKILL
    pids = [int(p) for p in result.stdout.strip().splitlines()[-1].split()]  # after any log line
    assert len(pids) == 2  # the child and its grandchild
    for pid in pids:
        await process_gone(pid)
        assert not alive(pid)


async def test_a_file_that_is_not_executable_is_named(
    launcher: LocalLauncher, tmp_path: Path
) -> None:
    """A command path without the execute bit is refused before anything is forked."""
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\ntrue\n")
    with pytest.raises(StartError, match="permission denied executing"):
        await launcher.spawn([str(script)])


def test_the_guardian_never_kills_a_recycled_pid() -> None:
    """A listed pid whose start time changed is someone else's now: left alone; the same
    pid with its real start time is killed with its group."""
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        real = guardian.start_time(proc.pid)
        assert real is not None
        for line, killed in ((f"+{proc.pid} {int(real) - 1}", False), (f"+{proc.pid}", True)):
            run = subprocess.run(
                guardian.argv(),
                input=line + "\n",
                text=True,
                capture_output=True,
                timeout=30,
                check=True,
            )
            assert ("killed 1 process group" in run.stderr) is killed
            if not killed:
                assert proc.poll() is None
        # SIGKILL is delivered, not done, when kill() returns: wait for the exit.
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        proc.kill()
        proc.wait()


def test_the_guardian_forgets_reaped_children_and_ignores_noise() -> None:
    """`-PID` drops a child from the list; lines that are not `+PID`/`-PID` are ignored."""
    proc = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    try:
        lines = f"+{proc.pid}\n-{proc.pid}\nnonsense\n+\n+12x\n-99999999\n"
        run = subprocess.run(
            guardian.argv(), input=lines, text=True, capture_output=True, timeout=30, check=True
        )
        assert run.stderr == ""
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def tasks_in_run() -> int:
    """Every task of this trio run, counted from the root down."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    return count(trio.lowlevel.current_root_task())


async def test_one_reaper_task_serves_every_child(launcher: LocalLauncher) -> None:
    """Children add no trio task each: one reaper awaits all their exits."""
    first = await launcher.spawn(["sleep", "100"])
    tasks = tasks_in_run()
    more = [await launcher.spawn(["sleep", "100"]) for _ in range(20)]
    assert tasks_in_run() == tasks
    for handle in [first, *more]:
        handle.kill()
    with trio.fail_after(10):
        terms = [await handle.wait() for handle in [first, *more]]
    assert {term.signal for term in terms} == {signal.SIGKILL}
    assert launcher.children == {}


class Pieces:
    """A ChunkSink that keeps what it is handed, per stream."""

    def __init__(self) -> None:
        self.data: dict[str, bytearray] = {"stdout": bytearray(), "stderr": bytearray()}
        self.ended: list[str] = []
        self.first = trio.Event()

    def write(self, stream: str, data: bytes) -> None:
        self.data[stream] += data
        self.first.set()

    def end(self, stream: str) -> None:
        self.ended.append(stream)


async def test_one_task_reads_every_relayed_childs_output(launcher: LocalLauncher) -> None:
    """Relayed children add no trio task each: one reader awaits all their pipes."""
    first = await launcher.spawn(["sleep", "100"], on_chunk=Pieces())
    tasks = tasks_in_run()
    more = [await launcher.spawn(["sleep", "100"], on_chunk=Pieces()) for _ in range(20)]
    assert tasks_in_run() == tasks
    for handle in [first, *more]:
        handle.kill()
    with trio.fail_after(10):
        for handle in [first, *more]:
            await handle.wait()
            await handle.output_done.wait()


async def test_a_flooding_child_neither_loses_bytes_nor_holds_up_a_quiet_one(
    launcher: LocalLauncher,
) -> None:
    """A child writing 32 MiB flat out gets every byte relayed in order, and a line a
    sibling writes once the flood is under way arrives before the flood ends (a full
    read rests its pipe for FLOOD_PAUSE: the flood takes at least 512 of them)."""
    size = 32 << 20
    flood = Pieces()
    write = f"import sys; sys.stdout.buffer.write(bytes(range(256)) * {size // 256})"
    flooding = await launcher.spawn(["python3", "-c", write], on_chunk=flood)
    heard = trio.Event()
    flood_when_heard: list[int] = []

    def hear(stream: str, line: str) -> None:
        flood_when_heard.append(len(flood.data["stdout"]))
        heard.set()

    with trio.fail_after(30):
        await flood.first.wait()
        talker = await launcher.spawn(["sh", "-c", "echo hi; exec sleep 100"], on_output=hear)
        await heard.wait()
        await flooding.output_done.wait()
    assert flood_when_heard[0] < size
    assert flood.data["stdout"] == bytes(range(256)) * (size // 256)
    assert sorted(flood.ended) == ["stderr", "stdout"]
    talker.kill()
    with trio.fail_after(10):
        await talker.wait()
