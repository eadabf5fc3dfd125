"""The config schema: typed, frozen, validated models of supervisor.toml.

Pure: imports nothing from the package. Field-level problems are pydantic validation
errors (turned into key paths by `config.load`); problems that span the whole file
(unknown `depends_on` targets, dependency cycles, restart settings that are only wrong
once a resource's overrides are merged over `[defaults.restart]`) come from
`Config.problems()`.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from supervisor.config.durations import format_duration, parse_duration
from supervisor.config.paths import default_socket_path, default_state_dir

Duration = Annotated[float, BeforeValidator(parse_duration)]


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(_positive)]
Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"),
]
Command = Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]

_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d+)$")


def split_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raise ValueError with a usable message."""
    match = _HOST_PORT.match(value)
    if match is None or not 0 <= int(match.group("port")) <= 65535:
        raise ValueError(f'expected "host:port" (e.g. "127.0.0.1:9310"), got {value!r}')
    return match.group("v6") or match.group("host"), int(match.group("port"))


def _host_port(value: str) -> str:
    split_host_port(value)
    return value


def _signal_name(value: object) -> str:
    """Normalise "TERM", "sigterm", 15 to "SIGTERM"."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return signal.Signals(value).name
        except ValueError:
            raise ValueError(f"unknown signal number {value}") from None
    if not isinstance(value, str):
        raise ValueError('expected a signal name such as "TERM" or "INT"')
    name = value.strip().upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if name not in signal.Signals.__members__:
        raise ValueError(f'unknown signal {value!r} (use e.g. "TERM", "INT", "QUIT", "HUP")')
    return name


SignalName = Annotated[str, BeforeValidator(_signal_name)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(_Model):
    """Delays between consecutive restarts (see `supervision.policy.backoff_delay`)."""

    initial: PositiveDuration = 1.0
    factor: float = Field(2.0, ge=1.0, le=100.0)
    max: PositiveDuration = 300.0
    jitter: float = Field(0.1, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> Self:
        if self.max < self.initial:
            raise ValueError(
                f"max ({format_duration(self.max)}) must be >= initial "
                f"({format_duration(self.initial)})"
            )
        return self


class IntensityConfig(_Model):
    """More than `max_restarts` restarts within `within` make a resource FATAL."""

    max_restarts: int = Field(10, ge=1)
    within: PositiveDuration = 300.0


class RestartConfig(_Model):
    """When and how fast a failed resource is started again."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff: BackoffConfig = BackoffConfig()
    reset_after: Duration = 600.0
    intensity: IntensityConfig = IntensityConfig()
    fatal_retry: PositiveDuration | None = None

    @property
    def fatal_retry_after(self) -> float:
        """How long a FATAL resource waits before it is tried again."""
        return self.backoff.max if self.fatal_retry is None else self.fatal_retry

    def merged(self, overrides: RestartOverrides) -> RestartConfig:
        """Return these settings with a resource's overrides applied key by key."""
        data = self.model_dump()
        for key, value in overrides.model_dump(exclude_none=True).items():
            if isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return RestartConfig.model_validate(data)


class BackoffOverrides(_Model):
    initial: PositiveDuration | None = None
    factor: float | None = Field(None, ge=1.0, le=100.0)
    max: PositiveDuration | None = None
    jitter: float | None = Field(None, ge=0.0, lt=1.0)


class IntensityOverrides(_Model):
    max_restarts: int | None = Field(None, ge=1)
    within: PositiveDuration | None = None


class RestartOverrides(_Model):
    """A resource's `restart` table: any subset of `[defaults.restart]`."""

    policy: Literal["always", "on-failure", "never"] | None = None
    backoff: BackoffOverrides | None = None
    reset_after: Duration | None = None
    intensity: IntensityOverrides | None = None
    fatal_retry: PositiveDuration | None = None


class _ProbeBase(_Model):
    exec: Command | None = None
    http: str | None = None
    tcp: Annotated[str, AfterValidator(_host_port)] | None = None
    timeout: PositiveDuration = 2.0

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Self:
        kinds = [k for k in ("exec", "http", "tcp") if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(f"set exactly one of exec, http or tcp (found: {found})")
        return self

    @property
    def kind(self) -> Literal["exec", "http", "tcp"]:
        if self.exec is not None:
            return "exec"
        return "http" if self.http is not None else "tcp"


class HealthProbeConfig(_ProbeBase):
    """A periodic check while RUNNING; `failures` consecutive failures restart the resource."""

    interval: PositiveDuration = 5.0
    failures: int = Field(3, ge=1)


class StartupProbeConfig(_ProbeBase):
    """A readiness gate: STARTING becomes RUNNING once this probe first succeeds."""

    interval: PositiveDuration = 0.5


class ProcessConfig(_Model):
    """`kind = "process"`: a local command, supervised like supervisord's programs."""

    kind: Literal["process"]
    command: Command
    cwd: Path | None = None
    env: dict[Annotated[str, StringConstraints(pattern=r"^[^=\x00]+$")], str] = {}
    user: str | int | None = None
    group: str | int | None = None
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: PositiveDuration = 30.0
    stop_signal: SignalName = "SIGTERM"
    stop_timeout: Duration = 10.0
    success_exit_codes: list[Annotated[int, Field(ge=0, le=255)]] = [0]
    log_output: bool = True
    startup: StartupProbeConfig | None = None
    health: HealthProbeConfig | None = None
    restart: RestartOverrides = RestartOverrides()


ResourceConfig = Annotated[ProcessConfig, Field(discriminator="kind")]


class EnvironmentConfig(_Model):
    """`[environments.NAME]`: a warm pool of sandboxes (served by a later release)."""

    backend: Literal["process", "docker", "deephaven"] = "process"
    min_ready: int = Field(1, ge=0)
    max_size: int = Field(8, ge=1)
    acquire_timeout: Duration = 30.0
    session_ttl: PositiveDuration = 3600.0
    lease: PositiveDuration = 60.0
    proactive_session_setup: bool = True
    housekeep_interval: PositiveDuration = 10.0
    features: list[dict[str, Any]] = []

    @model_validator(mode="after")
    def _sizes(self) -> Self:
        if self.min_ready > self.max_size:
            raise ValueError(f"min_ready ({self.min_ready}) must be <= max_size ({self.max_size})")
        return self


class DaemonConfig(_Model):
    """`[daemon]`: where the daemon listens, keeps state and logs."""

    control_socket: Path | None = None  # default: see `socket_path`
    http: Annotated[str, AfterValidator(_host_port)] | None = "127.0.0.1:9310"
    api_token_file: Path | None = None
    state_dir: Path | None = None  # default: see `state_path`
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: PositiveDuration = 60.0

    @property
    def socket_path(self) -> Path:
        """`control_socket`, or the default: /run/supervisor-daemon/control.sock for root,
        else under $XDG_RUNTIME_DIR (or /tmp/supervisor-daemon-UID) for everyone else."""
        return self.control_socket or default_socket_path()

    @property
    def state_path(self) -> Path:
        """`state_dir`, or the default: /var/lib/supervisor-daemon for root (systemd's
        StateDirectory= under systemd), else under $XDG_STATE_HOME."""
        return self.state_dir or default_state_dir()


class DefaultsConfig(_Model):
    restart: RestartConfig = RestartConfig()


class Config(_Model):
    """The whole file."""

    daemon: DaemonConfig = DaemonConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    resources: dict[Name, ResourceConfig] = {}
    environments: dict[Name, EnvironmentConfig] = {}

    def restart_for(self, name: str) -> RestartConfig:
        """The effective restart settings of resource `name`."""
        return self.defaults.restart.merged(self.resources[name].restart)

    def start_order(self) -> list[str]:
        """Resource names, each after everything it depends on (stable otherwise)."""
        order: list[str] = []
        done: set[str] = set()

        def visit(name: str) -> None:
            if name in done:
                return
            done.add(name)
            for dep in self.resources[name].depends_on:
                if dep in self.resources:
                    visit(dep)
            order.append(name)

        for name in self.resources:
            visit(name)
        return order

    def problems(self) -> list[tuple[str, str]]:
        """Problems that only show across keys: (dotted path, message) pairs."""
        found: list[tuple[str, str]] = []
        for name, res in self.resources.items():
            for i, dep in enumerate(res.depends_on):
                if dep == name:
                    found.append(
                        (f"resources.{name}.depends_on.{i}", "a resource cannot depend on itself")
                    )
                elif dep not in self.resources:
                    known = ", ".join(sorted(self.resources)) or "none"
                    found.append(
                        (
                            f"resources.{name}.depends_on.{i}",
                            f"no resource named {dep!r} (known: {known})",
                        )
                    )
            try:
                self.restart_for(name)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    path = f"resources.{name}.restart" + (f".{loc}" if loc else "")
                    found.append((path, err["msg"].removeprefix("Value error, ")))
        cycle = self._dependency_cycle()
        if cycle:
            found.append(
                (f"resources.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle))
            )
        return found

    def _dependency_cycle(self) -> list[str] | None:
        state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
        path: list[str] = []

        def visit(name: str) -> list[str] | None:
            state[name] = 1
            path.append(name)
            for dep in self.resources[name].depends_on:
                if dep not in self.resources or dep == name:
                    continue
                if state.get(dep) == 1:
                    return [*path[path.index(dep) :], dep]
                if dep not in state and (cycle := visit(dep)):
                    return cycle
            path.pop()
            state[name] = 2
            return None

        for name in self.resources:
            if name not in state and (cycle := visit(name)):
                return cycle
        return None
