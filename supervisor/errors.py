"""The exception tree of supervisor-daemon.

    SupervisorError
    ├── ConfigError                 a config file that cannot be used (carries every problem)
    ├── ResourceError               something went wrong with one managed resource
    │   └── StartError              the resource could not be started
    │       └── MisconfiguredError  ...and retrying cannot help (bad user, bad settings)
    ├── StateDirError               the state directory cannot be used
    └── ClientError                 the API client could not get an answer
        ├── DaemonUnavailableError  nothing answers at the socket or URL
        └── RequestError            the daemon answered with an error (code, message)

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


class StateDirError(SupervisorError):
    """The state directory is missing, unwritable or owned by another daemon."""


class ClientError(SupervisorError):
    """The API client could not get what it asked for."""


class DaemonUnavailableError(ClientError):
    """Nothing answers at the control socket or URL (is the daemon running?)."""


class RequestError(ClientError):
    """The daemon refused a request; `status`, `code` and `message` say why."""

    def __init__(
        self, status: int, code: str, message: str, *, retryable: bool = False, body: object = None
    ) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable
        self.body = body
