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
