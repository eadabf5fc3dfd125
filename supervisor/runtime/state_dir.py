"""The state directory: one daemon per directory, its instance id, and what it launched.

The guardian kills the daemon's children when the daemon dies; these records cover the
rarer case where both die at once (an OOM kill of the whole group, `kill -9` of both):
every launched process is recorded (pid, start time, resource) in a file of its own,
written atomically (temporary file, then rename) and removed when the process is reaped.
The next start of the same state directory stops whatever is still listed and alive
before it starts anything.

No fsync: the records only have to survive the daemon, not the machine, whose reboot
ends the processes anyway. A state directory that becomes unwritable (full, read-only)
is reported once and supervision goes on; a record is either whole or absent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import structlog
import trio

from supervisor.errors import StateDirError

# The guardian reads start times the same way (it is stdlib-only, so it owns the code).
from supervisor.launchers.guardian import start_time as process_start_time

log = structlog.get_logger("supervisor.state")


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    pid: int
    start_time: str
    resource: str


class StateDir:
    """A locked state directory; `open()` it before starting anything."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.procs = path / "processes"
        self.instance_id = ""
        self._lock_fd = -1
        self._broken = False

    def open(self) -> None:
        """Create, lock and read the directory.

        Raises:
            StateDirError: it cannot be created, or another daemon holds it.
        """
        try:
            self.procs.mkdir(mode=0o750, parents=True, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise StateDirError(
                f"{self.path}: cannot use the state directory: {exc.strerror}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirError(
                f"{self.path}: another daemon (pid {holder}) is using this state directory; "
                "stop it, or give this one another daemon.state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        self.instance_id = self._instance_id()

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1

    def _instance_id(self) -> str:
        path = self.path / "instance-id"
        with contextlib.suppress(FileNotFoundError):
            existing = path.read_text().strip()
            if existing:
                return existing
        new = uuid.uuid4().hex
        self._write(path, new + "\n")
        return new

    # ------------------------------------------------------------------ process records

    def record(self, pid: int, resource: str) -> None:
        """Remember a launched process (best effort: a failure is reported, not raised)."""
        started = process_start_time(pid)
        if started is None:
            return  # already gone: nothing to remember
        body = json.dumps({"pid": pid, "start_time": started, "resource": resource})
        self._write(self.procs / f"{pid}.json", body)

    def forget(self, pid: int) -> None:
        """The process was reaped: drop its record."""
        try:
            (self.procs / f"{pid}.json").unlink()
        except FileNotFoundError:
            pass  # never recorded (it exited at once), or already forgotten
        except OSError as exc:
            self._report(exc)

    def records(self) -> Iterator[ProcessRecord]:
        """Every record on disk; unreadable or partial files are skipped (and removed)."""
        for path in sorted(self.procs.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                yield ProcessRecord(
                    int(data["pid"]), str(data["start_time"]), str(data["resource"])
                )
            except (OSError, ValueError, KeyError, TypeError):
                with contextlib.suppress(OSError):
                    path.unlink()

    def _write(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            tmp.write_text(text)
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            self._report(exc)

    def _report(self, exc: OSError) -> None:
        if not self._broken:  # once: a full disk would otherwise flood the journal
            self._broken = True
            log.error(
                "state_dir_unwritable",
                path=str(self.path),
                error=exc.strerror or str(exc),
                detail="supervision continues; processes started now are not recorded for crash recovery",
            )


async def reap_orphans(state: StateDir, grace: float = 2.0) -> list[ProcessRecord]:
    """Stop what a previous run of this state directory left alive; return what was stopped.

    A record whose pid now shows another start time belongs to someone else: it is only
    forgotten. Live ones get SIGTERM to their group, then SIGKILL after `grace` seconds.
    """
    alive: list[tuple[ProcessRecord, int]] = []
    for rec in state.records():
        try:
            pidfd = os.pidfd_open(rec.pid)  # then check it is still the process we recorded
        except OSError:
            pidfd = -1
        if pidfd >= 0 and process_start_time(rec.pid) == rec.start_time:
            alive.append((rec, pidfd))
            continue
        if pidfd >= 0:
            os.close(pidfd)
        state.forget(rec.pid)
    for rec, _ in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGTERM)
    with trio.move_on_after(grace):
        for _, pidfd in alive:  # not our children, but a pidfd still says when they exit
            await trio.lowlevel.wait_readable(pidfd)
    reaped = []
    for rec, pidfd in alive:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(rec.pid, signal.SIGKILL)
        state.forget(rec.pid)
        log.warning("orphan_reaped", kind="process", pid=rec.pid, resource=rec.resource)
        reaped.append(rec)
    return reaped
