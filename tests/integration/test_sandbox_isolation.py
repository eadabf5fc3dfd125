"""Isolated `process` sandboxes: every boundary, proven by trying to cross it.

Real bubblewrap, real namespaces and cgroups, real processes, built the way the daemon
builds them (`runtime.kinds`). Each attempt must fail, and the sandbox, its neighbours
and the daemon must carry on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import MisconfiguredError, SandboxStateError, SessionExpiredError
from supervisor.launchers.isolation import bubblewrap, roots
from supervisor.launchers.isolation.namespace import Namespace
from supervisor.launchers.local import open_local_launcher
from supervisor.runtime.kinds import BACKENDS, Context
from supervisor.sandbox.backends.process import ProcessInstance
from supervisor.sandbox.environment import Environment, open_environment
from supervisor.sandbox.instance import ExecResult
from supervisor.sandbox.session import Session

WAIT = 30.0
PY = "/usr/bin/python3"


def settings(**overrides: Any) -> EnvironmentConfig:
    base: dict[str, Any] = {
        "min_ready": 2,
        "max_size": 2,
        "acquire_timeout": 20,
        "keepalive_interval": 60,
        "housekeep_interval": 60,
    }
    return EnvironmentConfig.model_validate({**base, **overrides})


@asynccontextmanager
async def isolated(tmp_path: Path, **overrides: Any) -> AsyncIterator[Environment]:
    """An environment of isolated process sandboxes, as the daemon builds it."""
    config = settings(**overrides)
    async with open_local_launcher() as launcher:
        backend, extra = BACKENDS["process"]("box", config, Context(launcher, None, tmp_path))
        with trio.fail_after(WAIT):
            async with open_environment("box", config, backend, extra) as env:
                yield env


def namespace(session: Session) -> Namespace:
    """The isolated sandbox behind `session`."""
    found = session.sandbox.instance
    assert isinstance(found, ProcessInstance)
    assert found.namespace is not None
    return found.namespace


async def sh(session: Session, script: str, timeout: float = 10.0) -> str:
    """What `sh -c script` printed (stdout, then stderr)."""
    result = await session.exec(["sh", "-c", script], timeout=timeout)
    return result.stdout + result.stderr


async def test_nothing_outside_the_work_dir_can_be_written(tmp_path: Path) -> None:
    """The host is read-only; the work dir is writable and is the host's directory."""
    async with isolated(tmp_path) as env, env.session() as session:
        out = await sh(session, "touch /etc/evil || touch /usr/evil || echo denied")
        assert "Read-only file system" in out
        assert not Path("/etc/evil").exists()
        assert not Path("/usr/evil").exists()
        out = await sh(session, "echo mine > note && cat /home/sandbox/note && pwd")
        assert out == "mine\n/home/sandbox\n"
        host = Path(session.connection()["workdir"])
        assert (host / "note").read_text() == "mine\n"
        assert (host / "note").stat().st_uid == session.connection()["uid"]


async def test_a_sandbox_cannot_read_another_sandboxs_files(tmp_path: Path) -> None:
    """Another sandbox's work dir (by its host path) and the sandboxes' root are out of
    reach, and so is the daemon's state dir."""
    state = tmp_path
    (state / "secret").write_text("daemon's")
    async with isolated(tmp_path) as env, env.session() as a, env.session() as b:
        await sh(a, "echo a-secret > secret; echo tmp > /tmp/a-only")
        other = a.connection()["workdir"]
        out = await sh(b, f"cat {other}/secret; ls {roots.SANDBOXES}; ls /tmp")
        assert "a-secret" not in out
        assert "a-only" not in out
        out = await sh(b, f"cat {state}/secret; ls -A {state}")
        assert "daemon's" not in out


async def test_host_processes_are_invisible_and_out_of_reach(tmp_path: Path) -> None:
    """Its own /proc: only the agent (PID 1) and itself; the daemon cannot be signalled."""
    async with isolated(tmp_path) as env, env.session() as session:
        out = await sh(session, "ls /proc | grep -E '^[0-9]+$' | sort -n | head -3")
        assert out.split()[0] == "1"
        assert str(os.getpid()) not in out.split()
        out = await sh(session, f"kill -9 {os.getpid()} 1 2>&1; echo done")
        assert "done" in out
        assert (await session.exec(["true"])).exit_code == 0  # the agent survived kill -9 1


async def test_network_none_reaches_nothing(tmp_path: Path) -> None:
    """With network = "none" neither the host's loopback nor any address is reachable;
    with "host" the same listener is (the control that shows the test can connect)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        probe = (
            f"import socket; s = socket.socket(); s.settimeout(3); "
            f"print(s.connect_ex(('127.0.0.1', {port})), s.connect_ex(('1.1.1.1', 53)))"
        )
        async with isolated(tmp_path, min_ready=1, max_size=1) as env, env.session() as s:
            result = await s.exec([PY, "-c", probe])
            refused, unreachable = result.stdout.split()
            assert int(refused) != 0  # ECONNREFUSED: its loopback is its own
            assert int(unreachable) != 0  # ENETUNREACH: no route out at all
            nets = await s.exec([PY, "-c", "import socket; print(socket.if_nameindex())"])
            assert nets.stdout == "[(1, 'lo')]\n"
        host = {"min_ready": 1, "max_size": 1, "network": "host"}
        async with isolated(tmp_path, **host) as env, env.session() as s:
            result = await s.exec([PY, "-c", probe])
            assert result.stdout.split()[0] == "0"


async def test_a_fork_bomb_hits_the_cap_and_the_neighbours_carry_on(tmp_path: Path) -> None:
    """A fork bomb stops at the sandbox's pids cap; a neighbour runs commands meanwhile;
    the bomb dies with its timeout and its own sandbox works again."""
    bomb = (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    )
    results: list[ExecResult] = []

    async def explode(victim: Session) -> None:
        results.append(await victim.exec([PY, "-c", bomb], timeout=3))

    async with (
        isolated(tmp_path, cgroup={"processes": 32}) as env,
        env.session() as victim,
        env.session() as neighbour,
    ):
        (pids,) = [p for h, p in namespace(victim).cgroup.parts if "pids" in h.controllers]
        peak = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(explode, victim)
            for _ in range(20):
                assert (await neighbour.exec(["true"], timeout=10)).exit_code == 0
                peak = max(peak, int((pids / "pids.current").read_text()))
        assert results[0].timed_out
        assert peak <= 32
        refused = (pids / "pids.events").read_text().split()  # "max N": forks refused
        assert int(refused[1]) > 0
        assert (await victim.exec(["echo", "back"])).stdout == "back\n"


async def test_a_memory_hog_is_killed_and_the_sandbox_survives(tmp_path: Path) -> None:
    """Past the sandbox's memory cap the hog is killed (OOM, SIGKILL): not the agent, not
    the neighbour, not the daemon."""
    hog = "b = []\nwhile True:\n    b.append(bytearray(8 << 20))\n"
    overrides = {"cgroup": {"memory": "64m"}, "limits": {"memory": None}}
    async with (
        isolated(tmp_path, **overrides) as env,
        env.session() as victim,
        env.session() as neighbour,
    ):
        result = await victim.exec([PY, "-c", hog], timeout=20)
        assert result.exit_code == -signal.SIGKILL
        assert (await victim.exec(["echo", "alive"])).stdout == "alive\n"
        assert (await neighbour.exec(["echo", "fine"])).stdout == "fine\n"


async def test_no_privilege_can_be_gained(tmp_path: Path) -> None:
    """No capability, no_new_privs, no nested user namespace, not root: its own uid."""
    async with isolated(tmp_path) as env, env.session() as a, env.session() as b:
        out = await sh(a, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
        fields = dict(line.split(":\t") for line in out.splitlines())
        assert fields == {"CapEff": "0" * 16, "CapBnd": "0" * 16, "NoNewPrivs": "1"}
        out = await sh(a, "unshare -U true && echo nested")
        assert "nested" not in out
        uid_a = int((await a.exec(["id", "-u"])).stdout)
        uid_b = int((await b.exec(["id", "-u"])).stdout)
        assert uid_a != uid_b
        assert all(settings().uids.contains(uid) for uid in (uid_a, uid_b))


async def test_the_next_session_finds_nothing_of_the_last(tmp_path: Path) -> None:
    """A background process lives for its session only; /tmp and /dev/shm start empty."""
    async with isolated(tmp_path, min_ready=1, max_size=1) as env:
        async with env.session() as first:
            # The command's group dies with it: it returns once the child has left the
            # group (the marker is written after setsid), or the child would die too.
            started = (
                "setsid sh -c 'touch /tmp/detached; exec sleep 1000' >/dev/null 2>&1 & "
                "until [ -e /tmp/detached ]; do sleep 0.01; done; "
                "touch /tmp/t /dev/shm/s; echo ok"
            )
            assert await sh(first, started) == "ok\n"
            # It may not have exec'd sleep yet: wait (bounded); then it stays.
            with trio.fail_after(30):
                while "sleep" not in (await sh(first, "ps -eo comm")).split():  # noqa: ASYNC110 - inside the sandbox
                    await trio.sleep(0.05)
        async with env.session() as second:
            out = await sh(second, "ps -eo comm; ls -A /tmp /dev/shm")
            assert "sleep" not in out.split()
            assert "t" not in out.split()
            assert "s" not in out.split()


async def test_a_sandbox_outlives_the_thread_that_spawned_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bwrap is forked from a worker thread (to switch uid off the event loop); trio
    retires an idle worker after 10 s, and a parent-death signal tied to that thread once
    killed every sandbox then. Wait for the very thread that forked it to end: the
    sandbox still works."""
    forkers: list[threading.Thread] = []
    popen = subprocess.Popen

    def recording(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("user") is not None:
            forkers.append(threading.current_thread())
        return popen(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", recording)
    config = settings(min_ready=1, max_size=1)
    async with open_local_launcher() as launcher:
        backend, extra = BACKENDS["process"]("box", config, Context(launcher, None, tmp_path))
        async with open_environment("box", config, backend, extra) as env, env.session() as s:
            assert forkers
            assert forkers[-1] is not threading.main_thread()
            with trio.fail_after(120):  # its idle timeout, on a loaded machine
                while any(thread.is_alive() for thread in forkers):  # noqa: ASYNC110 - no event
                    await trio.sleep(0.2)
            assert await sh(s, "echo alive") == "alive\n"


async def test_a_timeout_kills_the_commands_whole_group(tmp_path: Path) -> None:
    """At its timeout a command and what it started in its group are killed."""
    async with isolated(tmp_path, min_ready=1, max_size=1) as env, env.session() as s:
        result = await s.exec(["sh", "-c", "sleep 1000 & sleep 1000"], timeout=0.5)
        assert result.timed_out
        out = await sh(s, "ps -eo comm")
        assert "sleep" not in out.split()


async def test_stop_leaves_no_process_cgroup_or_directory(tmp_path: Path) -> None:
    """After the environment stops: its bwraps are reaped, cgroups and directories gone."""
    async with isolated(tmp_path, min_ready=1, max_size=1) as env, env.session() as s:
        await sh(s, "setsid sleep 1000 >/dev/null 2>&1 &")
        ns = namespace(s)
        pid, workdir = ns.handle.pid, Path(s.connection()["workdir"])
        cgroups = [path for _, path in ns.cgroup.parts]
        group = [path.parent for path in cgroups]
    assert not Path(f"/proc/{pid}").exists()
    assert not workdir.exists()
    assert not workdir.parent.exists()
    for path in (*cgroups, *group):
        assert not path.exists()


async def test_a_wedged_agent_costs_its_sandbox_only(tmp_path: Path) -> None:
    """An agent that stops answering (frozen from the host): the command is never started
    (or its kill never confirmed), so the sandbox is killed from outside and replaced."""
    async with isolated(tmp_path, min_ready=1, max_size=1) as env:
        async with env.session() as s:
            ns = namespace(s)
            agent = next(
                int(p) for p in (ns.cgroup.parts[0][1] / "cgroup.procs").read_text().split()
            )
            os.kill(agent, signal.SIGSTOP)
            # Either the exec sees the sandbox go, or the session ends with it first.
            with contextlib.suppress(SandboxStateError, SessionExpiredError):
                await s.exec(["sleep", "100"], timeout=0.5)
            assert ns.dead is not None
        with trio.fail_after(WAIT):
            async with env.session() as again:
                assert (await again.exec(["echo", "new"])).stdout == "new\n"


async def test_isolation_none_is_explicit_and_warned(tmp_path: Path) -> None:
    """`isolation = "none"`: the old backend, with a warning at start."""
    with capture_logs() as logs:
        async with (
            isolated(tmp_path, isolation="none", min_ready=1, max_size=1) as env,
            env.session() as s,
        ):
            assert (await s.exec(["id", "-u"])).stdout.strip() == str(os.geteuid())
    assert any(e["event"] == "sandbox_isolation_off" for e in logs)


async def test_without_bwrap_the_environment_is_misconfigured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No bwrap: the start fails with the install hint (no silent fallback)."""
    monkeypatch.setattr(bubblewrap.shutil, "which", lambda name: None)
    failures: list[MisconfiguredError] = []
    try:
        async with isolated(tmp_path):
            pass
    except* MisconfiguredError as group:
        failures += [e for e in group.exceptions if isinstance(e, MisconfiguredError)]
    assert len(failures) == 1
    assert "apt-get install bubblewrap" in str(failures[0])
