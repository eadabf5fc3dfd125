"""Where isolated sandboxes live on the host, and how a dead daemon's are swept away.

Work directories are `/var/tmp/supervisor-sandboxes/<state dir's hash>/<environment>/
<sandbox>`: searchable but not listable by others, each 0700 and owned by its sandbox's
uid. Not under the daemon's state dir, because bwrap runs as the sandbox's uid and has to
reach its directory by path, which a private state dir does not allow (bwrap resolves
even an inherited directory descriptor back to its path). The environment's cgroup group
is named after the same two parts (`supervisor-<hash>-<environment>`).

An environment's directory is *claimed* (an exclusive `flock` on it) while it has
sandboxes. A daemon that dies, even SIGKILLed, drops its claims with its descriptors, so
any daemon starting an environment afterwards finds the directories nobody claims,
kills what may still run in their cgroups, and removes both: nothing is left behind for
good, whichever state dir the dead daemon had.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from supervisor.errors import MisconfiguredError
from supervisor.launchers.isolation.bubblewrap import reachable
from supervisor.launchers.isolation.cgroups import Cgroup, Hierarchy

SANDBOXES = Path("/var/tmp/supervisor-sandboxes")  # noqa: S108 - root-owned, checked
LEASES = ".uids"  # the uid lease files (uids.py), host-wide, never swept


def sandboxes_root(state_dir: Path) -> Path:
    """The directory of one daemon's isolated sandboxes (named after its state dir)."""
    digest = hashlib.sha256(str(state_dir.absolute()).encode()).hexdigest()[:12]
    return SANDBOXES / digest


def group_name(root: Path) -> str:
    """The name of the cgroup group of an environment whose directory is `root`."""
    if root.parent.parent == SANDBOXES:
        return f"supervisor-{root.parent.name}-{root.name}"
    return f"supervisor-{hashlib.sha256(str(root).encode()).hexdigest()[:12]}"


def prepare_root(root: Path) -> None:
    """Make `root` and the directories between it and SANDBOXES searchable, never
    listable, by the sandboxes' uids, refusing a SANDBOXES someone else could have planted.

    Raises:
        MisconfiguredError: SANDBOXES is not a directory of ours closed to writes, or
            `root` (elsewhere) cannot be reached by other uids.
    """
    if not root.is_relative_to(SANDBOXES):
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        if not reachable(root):
            raise MisconfiguredError(
                f"{root} cannot be reached by the sandboxes' uids: every directory above it "
                "must be searchable by others (or use sandboxes_root())"
            )
        return
    SANDBOXES.mkdir(mode=0o711, exist_ok=True)
    info = SANDBOXES.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise MisconfiguredError(
            f"{SANDBOXES} must be a directory owned by the daemon's user, writable by it "
            "alone; remove it and the daemon makes it again"
        )
    relative = root.relative_to(SANDBOXES)
    for part in (*reversed(relative.parents), relative):
        path = SANDBOXES / part
        path.mkdir(mode=0o711, exist_ok=True)
        path.chmod(0o711)
    if not reachable(root):
        raise MisconfiguredError(f"{root} cannot be reached by the sandboxes' uids")


class Claim:
    """An environment's directory, held by this daemon while it has sandboxes there."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def take(self) -> None:
        """Make the directory and claim it (blocking while a sweeper removes an old one:
        in a worker thread)."""
        while not self.held:
            prepare_root(self.root)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.root).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._fd = fd
            else:  # swept while we waited: make it again
                os.close(fd)

    def drop(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def sweep(hierarchies: Iterable[Hierarchy]) -> list[Path]:
    """Kill and remove what unclaimed environments left (their processes, cgroups and
    directories); returns the directories removed. Cgroups that are still busy are left
    for the next sweep."""
    removed: list[Path] = []
    hierarchies = list(hierarchies)
    for root in _environment_dirs():
        try:
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live daemon's
            group = Cgroup.environment(hierarchies, group_name(root))
            group.kill()
            group.remove()
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(OSError):  # not empty: another environment's
                root.parent.rmdir()
            removed.append(root)
        finally:
            os.close(fd)
    return removed


def _environment_dirs() -> list[Path]:
    try:
        daemons = [d for d in SANDBOXES.iterdir() if d.name != LEASES and d.is_dir()]
    except OSError:
        return []
    found: list[Path] = []
    for daemon in daemons:
        with contextlib.suppress(OSError):
            found += [env for env in daemon.iterdir() if env.is_dir()]
        if not any(True for _ in _entries(daemon)):
            with contextlib.suppress(OSError):
                daemon.rmdir()
    return found


def _entries(directory: Path) -> Iterable[Path]:
    try:
        return list(directory.iterdir())
    except OSError:
        return []
