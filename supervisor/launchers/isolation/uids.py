"""Host uids for sandboxes: each running sandbox holds one of the configured range alone.

A uid is held with an exclusive `flock` on a file named after it, in one directory for
the whole host (`/var/tmp/supervisor-sandboxes/.uids`). Every environment of every
daemon leases from it, so two environments (or daemons) whose ranges overlap still never
hand out the same uid at once, and a daemon that dies (even SIGKILLed) frees its uids
with its file descriptors: nothing to clean up. A uid that belongs to an account of this host (/etc/passwd or NSS) is skipped.

Why it matters: RLIMIT_NPROC counts the processes of a uid, so a shared uid would let one
sandbox's processes starve another's; files a sandbox leaves are its own uid's alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
from pathlib import Path

from supervisor.config.environment import UidRange
from supervisor.errors import SandboxStateError


class UidLease:
    """One uid, held until `release()` (or until the daemon's process ends)."""

    def __init__(self, uid: int, fd: int) -> None:
        self.uid = uid
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # drops the lock


class UidLeases:
    """Hands out uids of `uids`, coordinated through lock files in `directory`."""

    def __init__(self, directory: Path, uids: UidRange) -> None:
        self.directory = directory
        self.uids = uids
        self._next = 0

    def lease(self) -> UidLease:
        """A uid no other sandbox holds.

        Raises:
            SandboxStateError: every uid of the range is taken.
        """
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        count = self.uids.count
        for step in range(count):
            offset = (self._next + step) % count
            uid = self.uids.first + offset
            if _has_account(uid):
                continue
            fd = os.open(self.directory / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._next = offset + 1
            return UidLease(uid, fd)
        raise SandboxStateError(
            f"every uid of {self.uids.first}..{self.uids.first + count - 1} is in use by a "
            "sandbox; widen `uids.count`"
        )


def _has_account(uid: int) -> bool:
    with contextlib.suppress(KeyError):
        pwd.getpwuid(uid)
        return True
    return False
