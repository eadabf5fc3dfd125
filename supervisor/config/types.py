"""Building blocks shared by every config model: value types, the strict base model,
restart settings and probes.

Pure: imports nothing from the package but `config.durations` and `config.paths`. Each
resource kind and the environments have their own model module built from these; the
whole file is `config.schema.Config`.
"""

from __future__ import annotations

import re
import signal
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from supervisor.config.durations import format_duration, parse_duration

Duration = Annotated[float, BeforeValidator(parse_duration)]


def positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


PositiveDuration = Annotated[float, BeforeValidator(parse_duration), AfterValidator(positive)]
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


def host_port(value: str) -> str:
    split_host_port(value)
    return value


def signal_name(value: object) -> str:
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


SignalName = Annotated[str, BeforeValidator(signal_name)]


class Model(BaseModel):
    """Frozen, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class BackoffConfig(Model):
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


class IntensityConfig(Model):
    """More than `max_restarts` restarts within `within` make a resource FATAL."""

    max_restarts: int = Field(10, ge=1)
    within: PositiveDuration = 300.0


class RestartConfig(Model):
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


class BackoffOverrides(Model):
    initial: PositiveDuration | None = None
    factor: float | None = Field(None, ge=1.0, le=100.0)
    max: PositiveDuration | None = None
    jitter: float | None = Field(None, ge=0.0, lt=1.0)


class IntensityOverrides(Model):
    max_restarts: int | None = Field(None, ge=1)
    within: PositiveDuration | None = None


class RestartOverrides(Model):
    """A resource's `restart` table: any subset of `[defaults.restart]`."""

    policy: Literal["always", "on-failure", "never"] | None = None
    backoff: BackoffOverrides | None = None
    reset_after: Duration | None = None
    intensity: IntensityOverrides | None = None
    fatal_retry: PositiveDuration | None = None


class ProbeBase(Model):
    exec: Command | None = None
    http: str | None = None
    tcp: Annotated[str, AfterValidator(host_port)] | None = None
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


class HealthProbeConfig(ProbeBase):
    """A periodic check while RUNNING; `failures` consecutive failures restart the resource."""

    interval: PositiveDuration = 5.0
    failures: int = Field(3, ge=1)


class StartupProbeConfig(ProbeBase):
    """A readiness gate: STARTING becomes RUNNING once this probe first succeeds."""

    interval: PositiveDuration = 0.5


# Fields a running resource takes in place (supervision settings, probes, ordering);
# a change to any other field (the command, env, image, port...) needs a new instance.
IN_PLACE_FIELDS = frozenset(
    {
        "autostart",
        "depends_on",
        "start_timeout",
        "stop_signal",
        "stop_timeout",
        "success_exit_codes",
        "startup",
        "health",
        "liveness",
        "restart",
    }
)


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: object) -> int:
    """Bytes from 1048576, "512k", "512m", "1.5g" or "2GiB" (binary units)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if isinstance(value, str) and (match := _SIZE.match(value.strip())):
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    raise ValueError(f'expected a size such as "512m", "2g" or a number of bytes, got {value!r}')


ByteSize = Annotated[int, BeforeValidator(parse_size)]


def engine_url(value: str | None) -> str | None:
    """A Docker engine URL: unix:///path, or tcp|http|https://host:port."""
    if value is None:
        return value
    hint = 'expected an engine URL such as "unix:///var/run/docker.sock" or "tcp://10.0.0.5:2376"'
    match = re.match(r"^(unix|tcp|http|https)://(.+)$", value)
    if match is None:
        raise ValueError(f"{hint}, got {value!r}")
    if match.group(1) != "unix":
        host, _, port = match.group(2).rstrip("/").rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{hint} (host:port with a port number), got {value!r}")
    return value


EngineUrl = Annotated[str, AfterValidator(engine_url)]
