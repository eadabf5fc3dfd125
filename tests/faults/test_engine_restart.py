"""Restart the Docker engine under supervised containers: the daemon rides it out.

The engine is a private one (tests/private_dockerd.py): its dockerd is stopped (every
container on it dies; no live-restore) and started again on the same data-root, while the
machine's engine and its containers never notice.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from supervisor.supervision.states import State
from tests.faults.test_kill_everything import IMAGE, docker_ids
from tests.integration.test_api import running
from tests.private_dockerd import PrivateDockerd

pytestmark = pytest.mark.slow


def labelled(engine: PrivateDockerd, label: str) -> set[str]:
    """Short ids (as `ident`) of the containers, running or not, with `label` on `engine`."""
    return set(engine.docker("ps", "-aq", "--filter", f"label={label}").split())


async def test_containers_come_back_after_the_engine_restarts(
    tmp_path: Path, private_dockerd: PrivateDockerd
) -> None:
    """dockerd restarts: the daemon sees the outage (event stream ends), reconnects, and
    brings every container back as a new one, leaving no dead ones behind."""
    engine = private_dockerd
    resources = "".join(
        f'[resources.c{i}]\nkind = "container"\nimage = "{IMAGE}"\n'
        f'docker_host = "{engine.host}"\n'
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
        assert daemon.engines is not None
        docker = daemon.engines[engine.host]
        label = f"supervisor.instance={docker.instance_id}"
        assert await trio.to_thread.run_sync(labelled, engine, label) == before
        # restart() in two halves, the outage awaited while the engine is surely down: a
        # private dockerd is back in a fraction of a second, the outage could be over unseen.
        await trio.to_thread.run_sync(engine.stop)
        with trio.fail_after(60):
            await docker.wait_engine(False)  # the outage is noticed
        await trio.to_thread.run_sync(engine.start)
        with trio.fail_after(90):
            await docker.wait_engine(True)  # and the stream reconnected
            for sup in sups:
                await sup.wait_for(
                    lambda s: s.state is State.RUNNING and s.snapshot().ident not in before
                )
        assert docker.reconnects >= 1
        after = {sup.snapshot().ident for sup in sups}
        with trio.fail_after(30):
            # the dead containers of the old engine run are removed in the background
            while await trio.to_thread.run_sync(labelled, engine, label) != after:  # noqa: ASYNC110 - another process
                await trio.sleep(0.2)
    assert not await trio.to_thread.run_sync(labelled, engine, label)
    # The machine's engine never saw any of it.
    assert not await trio.to_thread.run_sync(docker_ids, f"label={label}")
