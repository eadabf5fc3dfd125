"""The exception tree of supervisor-daemon.

    SupervisorError
    ├── ConfigError                 a config file that cannot be used (carries every problem)
    ├── NotFoundError               no such thing (the API answers 404)
    │   ├── ResourceNotFoundError       no resource of that name
    │   ├── EnvironmentNotFoundError    no environment of that name
    │   ├── NoCredentialsError          the resource's kind has no credentials
    │   ├── NoOutputError               the resource's kind keeps no program output
    │   ├── CommandNotFoundError        no background command of that id in the session
    │   └── SessionNotFoundError        (also a SessionError, below)
    ├── ConflictError               the request does not fit the current state (409)
    │   ├── NotRunningError             it needs a running resource
    │   ├── PlanChangedError            the config changed since the reload plan was shown
    │   └── SessionBusyError            (also a SessionError, below)
    ├── ReloadUnavailableError      the daemon was given no file to reload from
    ├── DaemonStoppingError         refused because the daemon is shutting down
    ├── ResourceError               something went wrong with one managed resource
    │   ├── StartError              the resource could not be started
    │   │   └── MisconfiguredError  ...and retrying cannot help (bad user, bad settings)
    │   │       └── UnauthorizedError   ...because the server rejected the credentials
    │   └── DeephavenClientError    a Deephaven call failed (gRPC status in `code`)
    │       └── HelperGoneError     the client helper process crashed, hung or was killed
    ├── StateDirError               the state directory cannot be used
    ├── SandboxError                something went wrong in a sandbox environment
    │   ├── SandboxStateError       the sandbox itself is broken (dead, unreachable)
    │   │   └── SandboxLostError        the node it ran on is lost: its session ends as lost
    │   ├── FeatureTeardownError    features failed to tear down (errors per feature)
    │   ├── SessionTeardownError    features failed to end a session (errors per feature)
    │   ├── FeatureCommandError     a feature's command failed (a user error)
    │   ├── UnsupportedError        the sandbox's backend cannot do this (files in Deephaven)
    │   ├── SandboxFileError        a file transfer the sandbox cannot do (not a directory)
    │   │   ├── UnsafePathError         a path or tar member that would leave the sandbox
    │   │   ├── TransferTooLargeError   a file transfer over the environment's file_limit
    │   │   └── SandboxPathNotFoundError    no such file (also a NotFoundError)
    │   ├── ExecRefusedError        an exec option the sandbox cannot honour (cwd on deephaven)
    │   ├── AcquireError            no session could be handed out
    │   │   ├── PoolOverloadedError     every sandbox is busy (retry later)
    │   │   ├── EnvironmentOutageError  sandboxes cannot be brought up (retry later)
    │   │   └── EnvironmentOfflineError the environment is not (or no longer) serving
    │   └── SessionError            a session id that cannot be used
    │       ├── SessionNotFoundError    no such session
    │       ├── SessionExpiredError     its TTL or lease ran out; the daemon ended it
    │       ├── SessionLimitError       asked for more than the environment allows (a ttl)
    │       └── SessionBusyError        not in progress right now (being set up or released)
    └── ClientError                 the API client could not get an answer
        ├── DaemonUnavailableError  nothing answers at the socket or URL
        └── RequestError            the daemon answered with an error (code, message)

Misuse of the Python API (wrong types, calling in the wrong state) raises built-in
exceptions instead. `api.errors` maps every error the API can meet to one status and
code (a test checks that none is missing).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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


class NotFoundError(SupervisorError):
    """What was asked for does not exist."""


class ResourceNotFoundError(NotFoundError):
    """No resource has this name."""


class EnvironmentNotFoundError(NotFoundError):
    """No environment has this name."""


class NoOutputError(NotFoundError):
    """The resource's kind keeps no program output (a connected Deephaven session)."""


class NoCredentialsError(NotFoundError):
    """The resource exists but its kind has no credentials to hand out."""


class CommandNotFoundError(NotFoundError):
    """The session has no background command of this id."""


class ConflictError(SupervisorError):
    """The request is valid but does not fit the current state."""


class NotRunningError(ConflictError):
    """The resource must be running for this (retry once it is)."""


class PlanChangedError(ConflictError):
    """A reload was asked to apply a plan made from another config than the file's now."""


class ReloadUnavailableError(SupervisorError):
    """The daemon was given a config object, not a file: there is nothing to re-read."""


class DaemonStoppingError(SupervisorError):
    """The daemon is shutting down and takes no new work."""


class ResourceError(SupervisorError):
    """A managed resource misbehaved."""


class StartError(ResourceError):
    """The resource could not be started; the restart policy decides what next."""


class MisconfiguredError(StartError):
    """The resource cannot start with its current settings; retrying will not help."""


class UnauthorizedError(MisconfiguredError):
    """The server rejected the credentials; the supervisor reports liveness UNAUTHORIZED."""


class DeephavenClientError(ResourceError):
    """A Deephaven call failed; `code` is the gRPC status name when there is one.

    `type` is the helper's classification of the failure (`settings`, `unauthorized`,
    `offline`, or the exception's class name); `launchers.deephaven.client.classify` maps
    both.
    """

    def __init__(self, message: str, *, code: str | None = None, type_: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.type = type_


class HelperGoneError(DeephavenClientError):
    """The helper process crashed, was killed, or did not answer in time."""


class StateDirError(SupervisorError):
    """The state directory is missing, unwritable or owned by another daemon."""


class SandboxError(SupervisorError):
    """Something went wrong in a sandbox environment."""


class SandboxStateError(SandboxError):
    """The sandbox itself is broken; it is shut down rather than reused."""


class SandboxLostError(SandboxStateError):
    """The place the sandbox ran is lost (a swarm node the manager reports down)."""


class _PerFeatureError(SandboxError):
    def __init__(self, what: str, errors: Mapping[str, BaseException]) -> None:
        self.errors = dict(errors)
        parts = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in self.errors.items())
        super().__init__(f"{what} failed for {len(self.errors)} feature(s): {parts}")


class FeatureTeardownError(_PerFeatureError):
    """`teardown` raised for some features; `errors` maps feature name to its error."""

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        super().__init__("teardown", errors)


class SessionTeardownError(_PerFeatureError):
    """`teardown_session` raised for some features; `errors` maps name to error."""

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        super().__init__("teardown_session", errors)


class FeatureCommandError(SandboxError):
    """A feature's hook command exited non-zero or timed out; the config must change."""


class UnsupportedError(SandboxError):
    """The sandbox's backend cannot do what was asked (files in a Deephaven sandbox)."""


class SandboxFileError(SandboxError):
    """A file transfer that cannot be done as asked (a file where a directory must be)."""


class UnsafePathError(SandboxFileError):
    """A path or tar member that is absolute, climbs out with `..`, goes through a symlink,
    or is a device: it could reach outside the sandbox."""


class TransferTooLargeError(SandboxFileError):
    """A file transfer carries more than the environment's `file_limit`."""


class SandboxPathNotFoundError(SandboxFileError, NotFoundError):
    """No file or directory at that path in the sandbox."""


class ExecRefusedError(SandboxError):
    """An exec option the sandbox cannot honour: `cwd`, `stdin` or `env` on a Deephaven
    sandbox."""


class AcquireError(SandboxError):
    """No session could be handed out; `retry_after` (seconds) when worth retrying."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PoolOverloadedError(AcquireError):
    """Every sandbox stayed busy for the whole acquire timeout."""


class EnvironmentOutageError(AcquireError):
    """Sandboxes have failed to come up for longer than the outage grace."""


class EnvironmentOfflineError(AcquireError):
    """The environment is not serving (not started yet, shutting down or offline)."""


class SessionError(SandboxError):
    """A session id that cannot be used."""


class SessionNotFoundError(SessionError, NotFoundError):
    """No session with this id exists (or it ended long ago)."""


class SessionExpiredError(SessionError):
    """The session outlived its TTL or lease and was ended by the daemon."""


class SessionLimitError(SessionError):
    """The request asks for more than the environment allows (a ttl over session_ttl)."""


class SessionBusyError(SessionError, ConflictError):
    """The session is not in progress right now: it is being set up or released."""


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
