"""SIGKILL a daemon that runs processes, containers and a busy sandbox pool; restart it.

Nothing the daemon started may outlive it but containers, and the next start of the same
instance must remove those (and only those) before it starts anything.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path

import httpx
import trio

from supervisor.launchers.isolation import cgroups
from supervisor.launchers.isolation.roots import group_name, sandboxes_root
from tests.faults.test_faults import twenty_trees
from tests.integration.conftest import process_gone
from tests.integration.test_daemon import daemon, descendants

IMAGE = "supervisor-test/sandbox:bookworm"


def docker_ids(*filters: str) -> set[str]:
    args = [arg for f in filters for arg in ("--filter", f)]
    out = subprocess.run(
        ["docker", "ps", "-aq", "--no-trunc", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return set(out.split())


def remove(ids: set[str]) -> None:
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, check=False, timeout=60)


def config(pids: Path) -> str:
    containers = "".join(
        f'[resources.c{i}]\nkind = "container"\nimage = "{IMAGE}"\n'
        f'command = ["sleep", "infinity"]\nstop_timeout = "2s"\n'
        for i in range(5)
    )
    pool = '[environments.box]\nbackend = "process"\nmin_ready = 2\nmax_size = 4\nlease = "60s"\n'
    return '[daemon]\nlog_format = "json"\n' + twenty_trees(pids) + containers + pool


async def busy_session(sock: str, marker: Path) -> None:
    """Acquire a session and start a long exec in it (which the SIGKILL interrupts)."""
    transport = httpx.AsyncHTTPTransport(uds=sock)
    async with httpx.AsyncClient(transport=transport, base_url="http://d", timeout=30) as client:
        answer = await client.post("/v1/environments/box/sessions", json={})
        assert answer.status_code == 201, answer.text
        sid = answer.json()["session_id"]
        marker.write_text(answer.json()["connection"]["workdir"])
        with contextlib.suppress(httpx.HTTPError):  # the daemon dies mid-request: expected
            await client.post(
                f"/v1/sessions/{sid}/exec",
                json={"command": ["sh", "-c", "sleep 1000 & echo $! > pid; wait"], "timeout": 900},
            )


async def test_sigkill_with_containers_and_a_busy_pool_leaks_nothing(tmp_path: Path) -> None:
    """Three rounds of: run 20 process trees, 5 containers and a pool with 2 busy sessions,
    then SIGKILL the daemon. Processes die with it; each restart removes the previous
    run's containers and sandboxes before it starts anything; a final SIGTERM leaves
    nothing at all."""
    pids = tmp_path / "pids"
    pids.mkdir()
    text = config(pids)
    old_containers: set[str] = set()
    old_processes: set[int] = set()
    old_workdirs: list[Path] = []
    instance = ""
    try:
        for round_ in range(4):
            for stale in pids.iterdir():
                stale.unlink()
            async with daemon(tmp_path, text) as d:
                started = time.monotonic()
                await d.until_log("daemon_ready", timeout=60)
                instance = (tmp_path / "state" / "instance-id").read_text().strip()
                reaped = {
                    e["container"]
                    for e in d.lines
                    if e.get("event") == "orphan_reaped" and e.get("kind") == "container"
                }
                assert reaped == {c[:12] for c in old_containers}
                if old_containers:
                    assert not docker_ids(*(f"id={c}" for c in old_containers))
                    assert time.monotonic() - started < 10  # zero orphans within 10 s
                for pid in old_processes:
                    await process_gone(pid)
                for workdir in old_workdirs:  # ids repeat across runs; contents must not
                    assert not (workdir / "pid").exists()
                running = docker_ids(f"label=supervisor.instance={instance}", "status=running")
                assert len(running) == 5
                if round_ == 3:
                    d.proc.terminate()
                    with trio.fail_after(60):
                        assert await d.proc.wait() == 0
                    assert not docker_ids(f"label=supervisor.instance={instance}")
                    assert not sandbox_leftovers(tmp_path / "state")
                    break
                old_workdirs = await busy_pool(tmp_path)
                old_processes = descendants(d.proc.pid)
                assert len(old_processes) >= 40 + 4  # trees, and two execs with a child
                old_containers = running
                d.proc.kill()
                await d.proc.wait()
            for pid in old_processes:
                await process_gone(pid)  # the guardian: processes never outlive us
    finally:
        if instance:
            remove(docker_ids(f"label=supervisor.instance={instance}"))


def sandbox_leftovers(state: Path) -> list[Path]:
    """What the isolated pool `box` could leave: its directories and its cgroups."""
    root = sandboxes_root(state)
    groups = [h.path / group_name(root / "box") for h in cgroups.discover()]
    return [path for path in (root, *groups) if path.exists()]


async def busy_pool(tmp_path: Path) -> list[Path]:
    """Two sessions each running a long command; returns their sandbox directories."""
    sock = str(tmp_path / "control.sock")
    markers = [tmp_path / f"session-{i}" for i in range(2)]
    for marker in markers:
        marker.unlink(missing_ok=True)
    async with trio.open_nursery() as nursery:
        for marker in markers:
            nursery.start_soon(busy_session, sock, marker)
        with trio.fail_after(15):
            # Files written by child processes of another process: no event to wait on.
            while not all(m.exists() and (Path(m.read_text()) / "pid").exists() for m in markers):  # noqa: ASYNC110
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    return [Path(m.read_text()) for m in markers]
