"""Per-sandbox cgroups: one cap on memory and one on processes for all a sandbox runs.

The daemon makes them inside its own cgroup, in whichever hierarchy holds each controller:
cgroup v1 (a hierarchy per controller, `pids.max`, `memory.limit_in_bytes`) or v2 (one
hierarchy, `pids.max`, `memory.max`), or a mix of both (a "hybrid" host, where v2 holds
no controller). The layout under the daemon's cgroup is `supervisor-<hash>/<sandbox>`, a
group per environment (named from its sandboxes' directory, so two daemons on one host
never share one) and a leaf per sandbox.

Under v2 a cgroup may not both hold processes and give controllers to its children, so
when the daemon's own cgroup has processes (a systemd service with `Delegate=yes`, say)
they are first moved into a leaf of their own, `supervisor-daemon`.

Only the agent, PID 1 of the sandbox, is ever moved into a sandbox's cgroup (by the daemon,
before it starts anything): every other process of the sandbox is forked inside it.
Everything here is a few small writes to cgroupfs, done where the caller is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from supervisor.errors import MisconfiguredError

CONTROLLERS = ("pids", "memory")
DAEMON_LEAF = "supervisor-daemon"


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted hierarchy that holds some of our controllers, at the daemon's cgroup."""

    version: int
    path: Path  # the daemon's own cgroup directory in it
    controllers: frozenset[str]


def parse(cgroup: str, mountinfo: str) -> list[Hierarchy]:
    """The hierarchies holding `pids` and `memory` for a process, from its
    /proc/PID/cgroup and /proc/PID/mountinfo (each controller in at most one)."""
    v1: dict[str, str] = {}
    v2: str | None = None
    for line in cgroup.splitlines():
        number, _, rest = line.partition(":")
        names, _, path = rest.partition(":")
        if number == "0" and names == "":
            v2 = path
        else:
            for name in names.split(","):
                v1[name] = path
    mounts: list[tuple[str, str, str, set[str]]] = []  # (fstype, root, mountpoint, options)
    for line in mountinfo.splitlines():
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        after = line.split(" - ", 1)[1].split()
        if len(after) < 3 or after[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append((after[0], fields[3], _unescape(fields[4]), set(after[2].split(","))))
    found: list[Hierarchy] = []
    taken: set[str] = set()
    for fstype, root, mountpoint, options in mounts:
        if fstype != "cgroup":
            continue
        mine = frozenset(c for c in CONTROLLERS if c in options and c in v1 and c not in taken)
        where = _under(mountpoint, root, v1[next(iter(mine))]) if mine else None
        if where is not None:
            found.append(Hierarchy(1, where, mine))
            taken |= mine
    if v2 is not None:
        for fstype, root, mountpoint, _ in mounts:
            if fstype != "cgroup2":
                continue
            where = _under(mountpoint, root, v2)
            if where is None:
                continue
            available = _v2_controllers(Path(mountpoint))
            mine = frozenset(c for c in CONTROLLERS if c in available and c not in taken)
            if mine:
                found.append(Hierarchy(2, where, mine))
                taken |= mine
            break
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def _under(mountpoint: str, root: str, path: str) -> Path | None:
    """Where cgroup `path` is, in a hierarchy mounted at `mountpoint` from `root`."""
    if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
        return None
    relative = path[len(root) :] if root != "/" else path
    return Path(mountpoint) / relative.lstrip("/")


def _v2_controllers(mountpoint: Path) -> set[str]:
    try:
        return set((mountpoint / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def discover() -> list[Hierarchy]:
    """The hierarchies holding `pids` and `memory` for this process.

    Raises:
        MisconfiguredError: one of the two controllers is not mounted anywhere.
    """
    cgroup = Path("/proc/self/cgroup").read_text()
    mountinfo = Path("/proc/self/mountinfo").read_text()
    found = parse(cgroup, mountinfo)
    missing = set(CONTROLLERS) - {c for h in found for c in h.controllers}
    if missing:
        raise MisconfiguredError(
            f"no cgroup hierarchy with the {' and '.join(sorted(missing))} controller is "
            "mounted for the daemon (under /sys/fs/cgroup); sandboxes need them for their caps"
        )
    return found


class Cgroup:
    """One cgroup, as a directory in each hierarchy that holds our controllers."""

    def __init__(self, parts: Sequence[tuple[Hierarchy, Path]]) -> None:
        self.parts = tuple(parts)

    @classmethod
    def environment(cls, hierarchies: Iterable[Hierarchy], name: str) -> Cgroup:
        """The group of one environment's sandboxes (`name` under the daemon's cgroup)."""
        return cls([(h, h.path / name) for h in hierarchies])

    def child(self, name: str) -> Cgroup:
        return Cgroup([(h, path / name) for h, path in self.parts])

    def create(self, *, memory: int | None = None, processes: int | None = None) -> None:
        """Make the directories (and their parents) and set the caps given.

        Raises:
            MisconfiguredError: cgroupfs refused (read-only, not delegated to us).
        """
        for hierarchy, path in self.parts:
            try:
                if hierarchy.version == 2:
                    _delegate_v2(hierarchy, path)
                path.mkdir(parents=True, exist_ok=True)
                if processes is not None and "pids" in hierarchy.controllers:
                    _write(path / "pids.max", processes)
                if memory is not None and "memory" in hierarchy.controllers:
                    if hierarchy.version == 1:
                        _write(path / "memory.limit_in_bytes", memory)
                        _write(path / "memory.memsw.limit_in_bytes", memory, optional=True)
                    else:
                        _write(path / "memory.max", memory)
                        _write(path / "memory.swap.max", 0, optional=True)
            except OSError as exc:
                raise MisconfiguredError(
                    f"cannot make cgroup {path}: {exc.strerror or exc}; the daemon needs a "
                    "writable cgroup of its own (root, or systemd's Delegate=yes)"
                ) from exc

    def add(self, pid: int) -> None:
        """Move process `pid` into this cgroup (in every hierarchy)."""
        for _, path in self.parts:
            _write(path / "cgroup.procs", pid)

    def pids(self) -> set[int]:
        """Every process in this cgroup and below it."""
        found: set[int] = set()
        for _, path in self.parts:
            for procs in path.rglob("cgroup.procs") if path.is_dir() else ():
                with contextlib.suppress(OSError):
                    found |= {int(p) for p in procs.read_text().split()}
        return found

    def kill(self) -> None:
        """SIGKILL every process in it (v2's cgroup.kill where there is one)."""
        for hierarchy, path in self.parts:
            if hierarchy.version == 2 and (path / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    _write(path / "cgroup.kill", 1)
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self) -> bool:
        """Remove the directories, deepest first; False while processes are still in it."""
        done = True
        for _, path in self.parts:
            if not path.is_dir():
                continue
            for directory in sorted(
                (p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
            ):
                done &= _rmdir(directory)
            done &= _rmdir(path)
        return done


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno in (errno.EBUSY, errno.ENOTEMPTY):
            return False
        raise
    return True


def _write(path: Path, value: int | str, *, optional: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(str(value))
    except FileNotFoundError:
        if not optional:
            raise


def _delegate_v2(hierarchy: Hierarchy, path: Path) -> None:
    """Enable our controllers down to `path`'s parent (v2's subtree_control), moving the
    daemon's own processes into a leaf first if its cgroup holds any."""
    wanted = " ".join(f"+{c}" for c in sorted(hierarchy.controllers))
    for directory in [p for p in path.parents if p.is_relative_to(hierarchy.path)][::-1]:
        directory.mkdir(exist_ok=True)
        enabled = set((directory / "cgroup.subtree_control").read_text().split())
        if hierarchy.controllers <= enabled:
            continue
        try:
            _write(directory / "cgroup.subtree_control", wanted)
        except OSError as exc:
            if exc.errno != errno.EBUSY or directory != hierarchy.path:
                raise
            leaf = directory / DAEMON_LEAF
            leaf.mkdir(exist_ok=True)
            for pid in (directory / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    _write(leaf / "cgroup.procs", pid)
            _write(directory / "cgroup.subtree_control", wanted)
