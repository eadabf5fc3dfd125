"""The exception tree of supervisor-daemon.

    SupervisorError
    ├── ConfigError                 a config file that cannot be used (carries every problem)
    ├── ResourceError               something went wrong with one managed resource
    │   ├── StartError              the resource could not be started
    │   │   └── MisconfiguredError  ...and retrying cannot help (bad user, bad settings)
    │   └── ProbeError              a health or readiness probe failed
    └── StateDirError               the state directory cannot be used

Misuse of the Python API (wrong types, calling in the wrong state) raises built-in
exceptions instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class SupervisorError(Exception):
    """Root of every error the daemon raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config: where (dotted key path) and why."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(SupervisorError):
    """A config file could not be loaded; `problems` lists every reason."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s)\n{lines}")


class ResourceError(SupervisorError):
    """A managed resource misbehaved."""


class StartError(ResourceError):
    """The resource could not be started; the restart policy decides what next."""


class MisconfiguredError(StartError):
    """The resource cannot start with its current settings; retrying will not help."""


class ProbeError(ResourceError):
    """A health or readiness probe failed."""


class StateDirError(SupervisorError):
    """The state directory is missing, unwritable or owned by another daemon."""
