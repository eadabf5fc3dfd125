"""Real children under real supervision: restarts, backoff, FATAL, stops, groups, order."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from supervisor.launchers.local import LocalLauncher
from supervisor.supervision.states import Liveness, State
from tests.integration.conftest import alive, free_port, process_gone, supervise

SLEEPER = """
[resources.sleeper]
kind = "process"
command = ["sleep", "1000"]
stop_timeout = "2s"
"""


async def test_kill_9_is_restarted_at_once(launcher: LocalLauncher) -> None:
    """A RUNNING child killed with SIGKILL is replaced immediately (first failure: no wait)."""
    async with supervise(SLEEPER, launcher) as run:
        sup = run["sleeper"]
        old = sup.snapshot().pid
        assert old is not None
        os.kill(old, signal.SIGKILL)
        await run.entered("sleeper", State.RUNNING, count=2)
        backoff = next(e for e in run.of("sleeper") if e.to_state == "BACKOFF")
        assert (backoff.reason, backoff.detail, backoff.next_delay) == (
            "signal",
            "killed by SIGKILL",
            0.0,
        )
        new = sup.snapshot().pid
        assert new not in (None, old)
        assert alive(new)
        assert sup.restarts == 1


async def test_crash_loop_backs_off_goes_fatal_and_is_retried(launcher: LocalLauncher) -> None:
    """A command that keeps failing waits longer each time, goes FATAL, and is retried later."""
    toml = """
    [resources.crasher]
    kind = "process"
    command = ["sh", "-c", "exit 3"]
    restart = { backoff = { initial = "100ms", factor = 2, max = "400ms", jitter = 0 }, intensity = { max_restarts = 4, within = "1m" }, fatal_retry = "300ms" }
    """
    async with supervise(toml, launcher) as run:
        fatal = await run.entered("crasher", State.FATAL)
        backoffs = [e for e in run.of("crasher") if e.to_state == "BACKOFF"]
        assert [e.next_delay for e in backoffs] == [0.0, 0.1, 0.2, 0.4]
        assert {e.detail for e in backoffs} == {"exited with code 3"}
        assert "more than 4 restarts within 60s" in fatal.detail
        retry = await run.entered("crasher", State.STARTING, count=6)
        assert retry.reason == "fatal_retry"
        assert retry.time - fatal.time >= 0.3


async def test_a_child_ignoring_sigterm_is_killed_after_stop_timeout(
    launcher: LocalLauncher, tmp_path: Path
) -> None:
    """stop_signal first; SIGKILL to the group once stop_timeout has passed."""
    ready = tmp_path / "ready"
    toml = f"""
    [resources.stubborn]
    kind = "process"
    command = ["python3", "-c", "import signal, time, pathlib; signal.signal(signal.SIGTERM, signal.SIG_IGN); pathlib.Path('{ready}').touch(); time.sleep(1000)"]
    stop_timeout = "500ms"
    startup = {{ exec = ["test", "-f", "{ready}"], interval = "20ms" }}
    """
    async with supervise(toml, launcher) as run:
        sup = run["stubborn"]
        pid = sup.snapshot().pid
        assert pid is not None
        began = trio.current_time()
        await sup.stop_and_wait()
        assert trio.current_time() - began >= 0.5
        assert not alive(pid)
        stopped = run.of("stubborn")[-1]
        assert (stopped.from_state, stopped.to_state) == ("STOPPING", "STOPPED")


async def test_grandchildren_die_with_the_group(launcher: LocalLauncher, tmp_path: Path) -> None:
    """Stopping a resource, or its leader dying, ends every process in its group."""
    pidfile = tmp_path / "grandchild"
    toml = f"""
    [resources.tree]
    kind = "process"
    command = ["sh", "-c", "sleep 1000 & echo $! > {pidfile}; wait"]
    startup = {{ exec = ["test", "-s", "{pidfile}"], interval = "20ms" }}
    """
    async with supervise(toml, launcher) as run:
        sup = run["tree"]
        first = int(pidfile.read_text())
        leader = sup.snapshot().pid
        assert leader is not None
        pidfile.unlink()
        os.kill(leader, signal.SIGKILL)  # the leader dies; its orphan must not survive it
        await process_gone(first)
        await run.entered("tree", State.RUNNING, count=2)
        second = int(pidfile.read_text())
        assert alive(second)
        await sup.stop_and_wait()
        await process_gone(second)


async def test_depends_on_orders_start_and_stop(launcher: LocalLauncher) -> None:
    """A dependent starts after its dependency is RUNNING and stops before it stops."""
    toml = """
    [resources.app]
    kind = "process"
    command = ["sleep", "1000"]
    depends_on = ["db"]
    [resources.db]
    kind = "process"
    command = ["sleep", "1000"]
    startup = { exec = ["sh", "-c", "sleep 0.3"], interval = "10ms" }
    """
    async with supervise(toml, launcher) as run:
        await run.entered("app", State.RUNNING)
    order = [(e.name, e.to_state) for e in run.events]
    assert order.index(("db", "RUNNING")) < order.index(("app", "STARTING"))
    assert order.index(("app", "STOPPED")) < order.index(("db", "STOPPING"))


async def test_health_check_failures_restart_the_process(
    launcher: LocalLauncher, tmp_path: Path
) -> None:
    """An exec health probe failing `failures` times in a row restarts the process."""
    healthy = tmp_path / "healthy"
    healthy.touch()
    toml = f"""
    [resources.checked]
    kind = "process"
    command = ["sleep", "1000"]
    health = {{ exec = ["test", "-f", "{healthy}"], interval = "50ms", timeout = "2s", failures = 2 }}
    """
    async with supervise(toml, launcher) as run:
        sup = run["checked"]
        old = sup.snapshot().pid
        healthy.unlink()
        backoff = await run.entered("checked", State.BACKOFF)
        assert backoff.reason == "health_check"
        assert "2 failed checks in a row" in backoff.detail
        healthy.touch()
        await run.entered("checked", State.RUNNING, count=2)
        assert sup.snapshot().pid != old
        assert sup.liveness is Liveness.ONLINE


async def test_http_and_tcp_probes_against_a_real_server(launcher: LocalLauncher) -> None:
    """A tcp startup probe gates RUNNING; an http health probe keeps it ONLINE."""
    port = free_port()
    toml = f"""
    [resources.web]
    kind = "process"
    command = ["python3", "-m", "http.server", "{port}", "--bind", "127.0.0.1"]
    startup = {{ tcp = "127.0.0.1:{port}", interval = "50ms" }}
    health = {{ http = "http://127.0.0.1:{port}/", interval = "100ms", timeout = "2s", failures = 2 }}
    """
    async with supervise(toml, launcher) as run:
        stream = await trio.open_tcp_stream("127.0.0.1", port)  # RUNNING means accepting
        await stream.aclose()
        await run.until("web", lambda s: s.checks >= 3)
        assert run["web"].state is State.RUNNING
        assert run["web"].liveness is Liveness.ONLINE
        assert run["web"].restarts == 0


async def test_missing_command_backs_off_with_a_clear_detail(launcher: LocalLauncher) -> None:
    """A command that does not exist is a start failure that says which command."""
    toml = """
    [resources.ghost]
    kind = "process"
    command = ["/nonexistent/bin/ghost"]
    """
    async with supervise(toml, launcher) as run:
        backoff = await run.entered("ghost", State.BACKOFF)
        assert backoff.reason == "start_failed"
        assert backoff.detail == "command not found: '/nonexistent/bin/ghost'"


async def test_unknown_user_is_fatal_misconfiguration(launcher: LocalLauncher) -> None:
    """An unknown user cannot be fixed by retrying: FATAL, MISCONFIGURED."""
    toml = """
    [resources.who]
    kind = "process"
    command = ["true"]
    user = "no-such-user-here"
    """
    async with supervise(toml, launcher) as run:
        fatal = await run.entered("who", State.FATAL)
        assert "unknown user 'no-such-user-here'" in fatal.detail
        assert run["who"].liveness is Liveness.MISCONFIGURED
