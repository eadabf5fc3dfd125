"""Finding the daemon's cgroups (v1, v2, hybrid) and making a sandbox's, on a fake cgroupfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.errors import MisconfiguredError
from supervisor.launchers.isolation import cgroups
from supervisor.launchers.isolation.cgroups import Cgroup, Hierarchy, parse

HYBRID_CGROUP = """9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
0::/
"""
HYBRID_MOUNTS = """31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs ro,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""


def test_v1_controllers_are_found_in_their_own_hierarchies() -> None:
    """A hybrid host: pids and memory each in a v1 hierarchy, at the daemon's own path."""
    found = parse(HYBRID_CGROUP, HYBRID_MOUNTS)
    assert found == [
        Hierarchy(1, Path("/sys/fs/cgroup/memory/process_api/abc"), frozenset({"memory"})),
        Hierarchy(1, Path("/sys/fs/cgroup/pids"), frozenset({"pids"})),
    ]


def test_v2_holds_the_controllers_when_no_v1_hierarchy_does(tmp_path: Path) -> None:
    """A v2-only host: one hierarchy with both controllers, read from cgroup.controllers."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    mounts = f"30 23 0:26 / {tmp_path} rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
    found = parse("0::/system.slice/supervisor-daemon.service\n", mounts)
    assert found == [
        Hierarchy(
            2,
            tmp_path / "system.slice/supervisor-daemon.service",
            frozenset({"pids", "memory"}),
        )
    ]


def test_a_mount_of_a_subtree_is_resolved_against_its_root() -> None:
    """A container that sees a bind of its own subtree: the path is under the mount."""
    cgroup = "5:pids:/docker/c1/system.slice/x.service\n"
    mounts = "40 31 0:36 /docker/c1 /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n"
    (found,) = parse(cgroup, mounts)
    assert found.path == Path("/sys/fs/cgroup/pids/system.slice/x.service")


def test_a_missing_controller_is_misconfigured(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hierarchy holds `memory`: the environment cannot start, and says why."""
    monkeypatch.setattr(cgroups, "parse", lambda cgroup, mountinfo: [])
    with pytest.raises(MisconfiguredError, match="memory and pids controller"):
        cgroups.discover()


def test_v1_limits_are_written_per_controller(tmp_path: Path) -> None:
    """pids.max and memory.limit_in_bytes in their hierarchies; memsw only where it exists."""
    pids, memory = tmp_path / "pids", tmp_path / "memory"
    hierarchies = [
        Hierarchy(1, pids, frozenset({"pids"})),
        Hierarchy(1, memory, frozenset({"memory"})),
    ]
    sandbox = Cgroup.environment(hierarchies, "supervisor-x").child("s1")
    sandbox.create(memory=64 << 20, processes=32)
    assert (pids / "supervisor-x/s1/pids.max").read_text() == "32"
    assert (memory / "supervisor-x/s1/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert not (memory / "supervisor-x/s1/pids.max").exists()
    sandbox.add(1234)
    assert (pids / "supervisor-x/s1/cgroup.procs").read_text() == "1234"


def test_v2_enables_controllers_down_to_the_sandbox(tmp_path: Path) -> None:
    """Under v2 every level above a sandbox gets `+memory +pids` in its subtree_control."""
    (tmp_path / "cgroup.subtree_control").write_text("")
    hierarchy = Hierarchy(2, tmp_path, frozenset({"pids", "memory"}))
    sandbox = Cgroup.environment([hierarchy], "supervisor-x").child("s1")
    (tmp_path / "supervisor-x").mkdir()
    (tmp_path / "supervisor-x" / "cgroup.subtree_control").write_text("")
    sandbox.create(memory=64 << 20, processes=32)
    assert (tmp_path / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert (tmp_path / "supervisor-x/cgroup.subtree_control").read_text() == "+memory +pids"
    assert (tmp_path / "supervisor-x/s1/memory.max").read_text() == str(64 << 20)
    assert (tmp_path / "supervisor-x/s1/pids.max").read_text() == "32"


def test_removal_goes_deepest_first(tmp_path: Path) -> None:
    """An environment's group and its sandboxes' leaves are all removed (empty dirs)."""
    group = Cgroup.environment([Hierarchy(1, tmp_path, frozenset({"pids"}))], "supervisor-x")
    group.child("a").create()
    group.child("b").create()
    for leaf in ("a", "b"):  # a real cgroupfs has no files to delete: fake its emptiness
        for file in (tmp_path / "supervisor-x" / leaf).iterdir():
            file.unlink()
    assert group.remove()
    assert not (tmp_path / "supervisor-x").exists()
