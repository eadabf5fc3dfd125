"""Where a resource's program output goes: `[defaults.log]` and a resource's `log` table.

Pure: imports nothing from the package but `config.types`. A resource's `log` table is any
subset of `[defaults.log]`, merged key by key (as `restart` is over `[defaults.restart]`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from supervisor.config.types import KIB, MIB, TIB, Between, Bytes, Model

MaxBytes = Annotated[int, Bytes(4 * KIB, TIB)]
Backups = Annotated[int, Between(0, 100)]
Target = Literal["file", "memory", "journald"]


class LogConfig(Model):
    """How a program's stdout and stderr are kept (`NAME.stdout.log`, `NAME.stderr.log`
    under `daemon.log_dir`, rotated by size; "memory" keeps only the in-memory tail;
    "journald" connects them to journald, which keeps them instead)."""

    target: Target = "file"
    max_bytes: MaxBytes = 50 * MIB
    backups: Backups = 5

    def merged(self, overrides: RotationOverrides) -> LogConfig:
        """These settings with a resource's `log` table applied key by key."""
        changed = overrides.model_dump(exclude_none=True)
        return self.model_copy(update=changed) if changed else self


class RotationOverrides(Model):
    """A container's `log` table: the engine keeps its output (json-file), rotated at
    `max_bytes` with `backups` older files (`max-size`, `max-file` = backups + 1)."""

    max_bytes: MaxBytes | None = None
    backups: Backups | None = None


class LogOverrides(RotationOverrides):
    """A resource's `log` table: any subset of `[defaults.log]`."""

    target: Target | None = None
