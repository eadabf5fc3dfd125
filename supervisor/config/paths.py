"""Default locations, importable without pulling in the schema (the CLI starts fast)."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/supervisor-daemon/supervisor.toml")


def default_socket_path() -> Path:
    """Where the daemon listens, and the CLI looks, when nothing else is said."""
    if os.geteuid() == 0:
        return Path("/run/supervisor-daemon/control.sock")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return Path(runtime) / "supervisor-daemon" / "control.sock"
    return Path(f"/tmp/supervisor-daemon-{os.geteuid()}/control.sock")  # noqa: S108 - per-user directory, created 0750
