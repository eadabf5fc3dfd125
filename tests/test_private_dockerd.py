"""The private Docker engine fixture: side by side, restartable, and gone without a trace."""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import PRIVATE_ENGINE_IMAGE
from tests.private_dockerd import (
    EngineError,
    PrivateDockerd,
    bridge_exists,
    mounts_under,
    processes_naming,
)

pytestmark = pytest.mark.slow


def machine_engine_id() -> str:
    return subprocess.run(
        ["docker", "info", "--format", "{{.ID}}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def test_two_engines_side_by_side_restart_and_leave_nothing_behind(
    private_dockerds: Callable[[], PrivateDockerd],
) -> None:
    """Two engines at once, each with its own socket, bridge, subnet and ID, running a
    container on its own bridge. A restart stops only that engine's containers and keeps
    its data-root; closing leaves no process, mount, bridge or directory, and the
    machine's engine, docker0 and iptables never hear of any of it."""
    machine_id = machine_engine_id()
    had_docker0 = bridge_exists("docker0")
    a, b = private_dockerds(), private_dockerds()
    assert len({a.socket, b.socket}) == len({a.bridge, b.bridge}) == 2
    assert not a.subnet.overlaps(b.subnet)
    ids = {engine.docker("info", "--format", "{{.ID}}").strip() for engine in (a, b)}
    assert len(ids) == 2
    assert machine_id not in ids

    containers = {}
    # --init: sleep as PID 1 would ignore the SIGTERM of a stopping dockerd for 10 s
    run = ("run", "--detach", "--init", PRIVATE_ENGINE_IMAGE, "sleep", "infinity")
    for engine in (a, b):
        cid = engine.docker(*run).strip()
        containers[engine.host] = cid
        address = engine.docker("inspect", "--format", "{{.NetworkSettings.IPAddress}}", cid)
        assert ipaddress.ip_address(address.strip()) in engine.subnet
        assert engine.docker("ps", "--quiet", "--no-trunc").split() == [cid]
    rules = subprocess.run(
        ["iptables-save"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    for engine in (a, b):
        assert engine.bridge not in rules
        assert str(engine.subnet) not in rules

    def running(engine: PrivateDockerd) -> str:
        cid = containers[engine.host]
        return engine.docker("inspect", "--format", "{{.State.Running}}", cid).strip()

    a.stop()
    with pytest.raises(EngineError):
        a.docker("version", timeout=30)
    assert running(b) == "true"
    a.start()
    assert running(a) == "false"  # dockerd stopped it on the way down (no live-restore)
    a.docker("start", containers[a.host])  # the data-root (image, container) survived
    before = a.dockerd_pid
    a.restart()
    assert a.dockerd_pid != before
    assert running(a) == "false"
    assert running(b) == "true"

    for engine in (a, b):
        base, bridge = engine.base, engine.bridge
        engine.close()
        assert not processes_naming(base)
        assert not mounts_under(base)
        assert not bridge_exists(bridge)
        assert not base.exists()
    assert bridge_exists("docker0") == had_docker0
    assert machine_engine_id() == machine_id
