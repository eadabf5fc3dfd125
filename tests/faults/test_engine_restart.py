"""Restart the Docker engine under supervised containers: the daemon rides it out.

This stops the machine's dockerd (every container on it dies; no live-restore) and starts
it again exactly as it was started, so the suite runs it last (see tests/conftest.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from supervisor.supervision.states import State
from tests.faults.test_kill_everything import IMAGE, docker_ids
from tests.integration.test_api import running

pytestmark = [pytest.mark.slow, pytest.mark.engine_restart]
DOCKERD_LOG = Path("/var/log/supervisor-test-dockerd.log")


def engine_answers() -> bool:
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False, timeout=30)
    return probe.returncode == 0


def restart_dockerd() -> None:
    """Stop dockerd and start it again the way it was started (systemd or a plain process)."""
    if subprocess.run(["systemctl", "is-active", "--quiet", "docker"], check=False).returncode == 0:
        subprocess.run(["systemctl", "restart", "docker"], check=True, timeout=120)
        return
    pid = int(
        subprocess.run(
            ["pgrep", "-xo", "dockerd"], capture_output=True, text=True, check=True
        ).stdout
    )
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    os.kill(pid, signal.SIGTERM)
    subprocess.run(["timeout", "60", "tail", f"--pid={pid}", "-f", "/dev/null"], check=True)
    # Through a shell that exits at once: dockerd is nobody's child, as before.
    subprocess.run(
        ["sh", "-c", f'"$@" >>{DOCKERD_LOG} 2>&1 </dev/null &', "sh", *(a.decode() for a in argv)],
        check=True,
        start_new_session=True,
        timeout=30,
    )


async def test_containers_come_back_after_the_engine_restarts(tmp_path: Path) -> None:
    """dockerd restarts: the daemon sees the outage (event stream ends), reconnects, and
    brings every container back as a new one, leaving no dead ones behind."""
    resources = "".join(
        f'[resources.c{i}]\nkind = "container"\nimage = "{IMAGE}"\n'
        f'command = ["sleep", "infinity"]\nstop_timeout = "2s"\n'
        f'restart = {{ backoff = {{ initial = "200ms", max = "2s" }} }}\n'
        for i in range(3)
    )
    async with running(tmp_path, resources) as daemon:
        sups = [daemon.supervisors[f"c{i}"] for i in range(3)]
        with trio.fail_after(60):
            for sup in sups:
                await sup.wait_for(lambda s: s.state is State.RUNNING)
        before = {sup.snapshot().ident for sup in sups}
        assert daemon._engines is not None
        engine = daemon._engines[None]
        instance = engine.instance_id
        try:
            await trio.to_thread.run_sync(restart_dockerd)
            with trio.fail_after(90):
                await engine.wait_engine(False)  # the outage is noticed
                await engine.wait_engine(True)  # and the stream reconnected
                for sup in sups:
                    await sup.wait_for(
                        lambda s: s.state is State.RUNNING and s.snapshot().ident not in before
                    )
        finally:
            with trio.fail_after(90):
                while not await trio.to_thread.run_sync(engine_answers):  # noqa: ASYNC110 - another process
                    await trio.sleep(0.5)
        assert engine.reconnects >= 1
        label = f"label=supervisor.instance={instance}"
        with trio.fail_after(30):
            # the dead containers of the old engine run are removed in the background
            while len(await trio.to_thread.run_sync(docker_ids, label)) != 3:  # noqa: ASYNC110
                await trio.sleep(0.2)
    assert not await trio.to_thread.run_sync(docker_ids, f"label=supervisor.instance={instance}")
