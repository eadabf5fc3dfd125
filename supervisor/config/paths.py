"""Default locations, importable without pulling in the schema (the CLI starts fast)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/supervisor-daemon/supervisor.toml")


SYSTEM_RUNTIME = Path("/run/supervisor-daemon")


def default_socket_path() -> Path:
    """Where the daemon listens, and the CLI looks, when nothing else is said.

    Under systemd, the unit's RuntimeDirectory= ($RUNTIME_DIRECTORY); else the system
    location when it exists or we are root; else a per-user one.
    """
    service = os.environ.get("RUNTIME_DIRECTORY")
    if service:
        return Path(service.split(":")[0]) / "control.sock"
    if os.geteuid() == 0 or SYSTEM_RUNTIME.is_dir():
        return SYSTEM_RUNTIME / "control.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "supervisor-daemon" / "control.sock"
    return Path(f"/tmp/supervisor-daemon-{os.geteuid()}/control.sock")  # noqa: S108 - per-user directory, created 0750


def default_state_dir() -> Path:
    """Where the daemon keeps its state when `daemon.state_dir` is not set.

    Under systemd, the unit's StateDirectory= ($STATE_DIRECTORY); for root,
    /var/lib/supervisor-daemon; for anyone else, $XDG_STATE_HOME (or ~/.local/state).
    """
    service = os.environ.get("STATE_DIRECTORY")
    if service:
        return Path(service.split(":")[0])
    if os.geteuid() == 0:
        return Path("/var/lib/supervisor-daemon")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "supervisor-daemon"


def default_log_dir(state_dir: Path) -> Path:
    """Where programs' output files go when `daemon.log_dir` is not set.

    Under systemd, the unit's LogsDirectory= ($LOGS_DIRECTORY, /var/log/supervisor-daemon);
    else `logs` in the state directory.
    """
    service = os.environ.get("LOGS_DIRECTORY")
    if service:
        return Path(service.split(":")[0])
    return state_dir / "logs"
