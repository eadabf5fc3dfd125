"""Sandbox directories: claimed while in use, swept once nobody claims them."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import MisconfiguredError
from supervisor.launchers.isolation import roots
from supervisor.launchers.isolation.cgroups import Hierarchy


@pytest.fixture
def sandboxes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A SANDBOXES every uid can reach (pytest's own tmp dirs are closed to others)."""
    parent = Path(tempfile.mkdtemp(dir="/var/tmp"))
    parent.chmod(0o755)
    monkeypatch.setattr(roots, "SANDBOXES", parent / "sandboxes")
    try:
        yield parent / "sandboxes"
    finally:
        shutil.rmtree(parent)


def test_an_unclaimed_environment_is_swept_with_its_cgroup(sandboxes: Path, tmp_path: Path) -> None:
    """A dead daemon's directory (nobody claims it) goes, and so does its cgroup group;
    a claimed one (a live daemon's) stays."""
    pids = tmp_path / "pids"
    hierarchies = [Hierarchy(1, pids, frozenset({"pids"}))]
    dead, live = sandboxes / "aaaa" / "box", sandboxes / "bbbb" / "box"
    roots.prepare_root(dead)
    (dead / "box__0_0").mkdir()
    (pids / roots.group_name(dead) / "box__0_0").mkdir(parents=True)
    claim = roots.Claim(live)
    claim.take()
    try:
        assert roots.sweep(hierarchies) == [dead]
        assert not (sandboxes / "aaaa").exists()
        assert not (pids / roots.group_name(dead)).exists()
        assert live.is_dir()
    finally:
        claim.drop()
    assert roots.sweep(hierarchies) == [live]


def test_the_uid_leases_are_never_swept(sandboxes: Path) -> None:
    """The host-wide lease directory is not an environment."""
    (sandboxes / roots.LEASES).mkdir(parents=True)
    (sandboxes / roots.LEASES / "1800000000").write_text("")
    assert roots.sweep([]) == []
    assert (sandboxes / roots.LEASES / "1800000000").exists()


def test_directories_are_searchable_but_not_listable(sandboxes: Path) -> None:
    """Between SANDBOXES and an environment every directory is 0711."""
    root = sandboxes / "aaaa" / "box"
    roots.prepare_root(root)
    for path in (sandboxes, root.parent, root):
        assert path.stat().st_mode & 0o777 == 0o711


def test_a_planted_sandboxes_directory_is_refused(sandboxes: Path) -> None:
    """A SANDBOXES that others may write to (someone made it before us) is refused."""
    sandboxes.mkdir(mode=0o777)
    sandboxes.chmod(0o777)
    with pytest.raises(MisconfiguredError, match="remove it"):
        roots.prepare_root(sandboxes / "aaaa" / "box")


def test_cgroup_groups_are_named_after_daemon_and_environment(sandboxes: Path) -> None:
    assert roots.group_name(sandboxes / "aaaa" / "box") == "supervisor-aaaa-box"
