"""Building blocks shared by every config model: value types, the strict base model,
restart settings and probes.

Pure: imports nothing from the package but `config.durations` and `config.paths`. Each
resource kind and the environments have their own model module built from these; the
whole file is `config.schema.Config`.

Models are strict: a TOML string is never a number or a boolean and a float is never an
int (pydantic's lax mode took `autostart = "yes"` and `max_restarts = "3"`). Every number,
duration and size carries a `Range`: it is checked at load time, listed in the README's
config reference (`config.reference`), and a test fails on any numeric field without one,
because a value nobody bounded is a value somebody will allocate.
"""

from __future__ import annotations

import math
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    SecretStr,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from supervisor.config.durations import format_duration, parse_duration

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
WEEK = 7 * DAY
KIB = 1 << 10
MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40


def format_size(size: float) -> str:
    """Bytes in the config's notation: "512k", "64m", "1t"."""
    for unit, scale in (("t", TIB), ("g", GIB), ("m", MIB), ("k", KIB)):
        if size >= scale and size % scale == 0:
            return f"{int(size // scale)}{unit}"
    return f"{int(size)}"


@dataclass(frozen=True, slots=True)
class Range:
    """The documented range of a number: checked when the config loads.

    `unit` says how values are written and shown: "" plain numbers, "s" durations
    (parsed by `parse_duration`), "bytes" sizes (parsed by `parse_size`).
    """

    low: float
    high: float
    unit: Literal["", "s", "bytes"] = ""
    low_open: bool = False
    high_open: bool = False

    def show(self, value: float) -> str:
        if self.unit == "s":
            return format_duration(value) if value < 1e12 else f"{value:g}s"
        if self.unit == "bytes":
            return format_size(value) if value < 1e18 else f"{value:g}"
        return f"{value:g}" if isinstance(value, float) else str(value)

    def describe(self) -> str:
        """The range as the README's reference shows it, e.g. "0 < x ≤ 1d"."""
        low = "<" if self.low_open else "≤"
        high = "<" if self.high_open else "≤"
        return f"{self.show(self.low)} {low} x {high} {self.show(self.high)}"

    def words(self) -> str:
        """The range in an error message: "between 1 and 1000", "more than 0s and at most 1d"."""
        low, high = self.show(self.low), self.show(self.high)
        if not self.low_open and not self.high_open:
            return f"between {low} and {high}"
        first = f"more than {low}" if self.low_open else f"at least {low}"
        second = f"less than {high}" if self.high_open else f"at most {high}"
        return f"{first} and {second}"

    def check(self, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return value  # a union's other member ("auto" for a port)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"must be a finite number, {self.words()}")
        too_low = value <= self.low if self.low_open else value < self.low
        too_high = value >= self.high if self.high_open else value > self.high
        if too_low or too_high:
            shown = self.show(value) if abs(value) < 1e18 else "a number that large"
            raise ValueError(f"must be {self.words()} (got {shown})")
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        schema = handler(source)
        parse = {"s": parse_duration, "bytes": parse_size}.get(self.unit)
        if parse is not None:
            schema = core_schema.no_info_before_validator_function(parse, schema)
        return core_schema.no_info_after_validator_function(self.check, schema)


def Seconds(low: float, high: float, *, low_open: bool = False) -> Range:
    """A duration ("250ms", "10s", "5m", or seconds) between `low` and `high` seconds."""
    return Range(low, high, "s", low_open=low_open)


def Bytes(low: int, high: int) -> Range:
    """A size ("512k", "64m", "1g", or bytes) between `low` and `high` bytes."""
    return Range(low, high, "bytes")


def Between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Range:
    """A plain number between `low` and `high`."""
    return Range(low, high, low_open=low_open, high_open=high_open)


# Durations an operator would find sane, by role.
Timeout = Annotated[float, Seconds(0, DAY, low_open=True)]
Interval = Annotated[float, Seconds(0, DAY, low_open=True)]
Grace = Annotated[float, Seconds(0, DAY)]  # zero allowed: "do not wait"
Lifetime = Annotated[float, Seconds(0, 30 * DAY, low_open=True)]
Port = Annotated[int, Between(1, 65535)]
Cpus = Annotated[float, Between(0, 1024, low_open=True)]
PidsLimit = Annotated[int, Between(1, 4_194_304)]  # the kernel's pid_max ceiling
Count = Annotated[int, Between(1, 10_000)]
Fraction = Annotated[float, Between(0, 1, high_open=True)]
ExitCode = Annotated[int, Between(0, 255)]


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": KIB, "m": MIB, "g": GIB, "t": TIB}
_SIZE_HINT = 'use e.g. "512m", "2g", "64k" or a number of bytes'


def parse_size(value: object) -> int:
    """Bytes from 1048576, "512k", "512m", "1.5g" or "2GiB" (binary units, as Docker reads them).

    Raises:
        ValueError: with a message that says what to write instead.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and (match := _SIZE.match(value.strip())):
        if len(match.group(1)) > 24:
            raise ValueError(f"size {value[:32]!r}... is far too large")
        return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    shown = repr(value) if isinstance(value, str | float) else type(value).__name__
    raise ValueError(f"expected a size, got {shown} ({_SIZE_HINT})")


def _argv(argv: list[str]) -> list[str]:
    if not any(c.isprintable() and not c.isspace() for c in argv[0]):
        raise ValueError("the program (the first element) must not be blank")
    if any("\x00" in arg for arg in argv):
        raise ValueError("arguments cannot contain NUL characters")
    return argv


def _nonempty_path(path: Path) -> Path:
    if not str(path).strip() or str(path) == ".":
        raise ValueError("must not be empty")
    return path


def _nonempty_secret(secret: SecretStr) -> SecretStr:
    if not secret.get_secret_value():
        raise ValueError("must not be empty")
    return secret


Name = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"),
]
# A resource as a group lists it: a name, or one instance `name:i` of a resource with
# `instances` (what `config.instances` names them).
MemberName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}(:(0|[1-9][0-9]{0,3}))?$"),
]
Command = Annotated[
    list[Annotated[str, StringConstraints(min_length=1)]],
    Field(min_length=1, max_length=4096),
    AfterValidator(_argv),
]
# TOML has no path type: paths are strings (strict mode alone would want a Path object).
FilePath = Annotated[Path, Field(strict=False), AfterValidator(_nonempty_path)]
# Never echoed: validation errors of a Secret field leave the input out (config.load),
# and its repr and dumps show asterisks.
Secret = Annotated[SecretStr, Field(strict=False), AfterValidator(_nonempty_secret)]
# A user or group: a name, or a numeric id below the kernel's "no id" value.
_PRINCIPAL = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,63}\$?$")


def _principal(value: object) -> str | int:
    """A user or group name, or a numeric id (one message for either: not a union's two)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 2**32 - 2:
            raise ValueError("a numeric id must be between 0 and 4294967294")
        return value
    if isinstance(value, str) and _PRINCIPAL.match(value):
        return value
    raise ValueError("expected a user or group name (letters, digits, '_', '.', '-') or id")


Principal = Annotated[str | int, BeforeValidator(_principal), Between(0, 2**32 - 2)]
EnvName = Annotated[str, StringConstraints(pattern=r"^[^=\x00]+$")]


@dataclass(frozen=True, slots=True)
class Sensitive:
    """Marks a value that may hold a credential: its validation errors never show it."""


# Environment values may hold credentials: a wrong one is reported without its value.
EnvValue = Annotated[str, Sensitive()]


@dataclass(frozen=True, slots=True)
class SecretSource:
    """Marks a field naming an environment variable that holds a secret (`token_env`):
    the daemon reads it, and no child process inherits it."""


SecretEnvName = Annotated[str, StringConstraints(pattern=r"^[^=\x00]+$"), SecretSource()]


_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d+)$")


def split_host_port(value: str) -> tuple[str, int]:
    """Split "host:port" or "[v6]:port"; raise ValueError with a usable message."""
    match = _HOST_PORT.match(value)
    if match is None or len(match.group("port")) > 5 or not 0 <= int(match.group("port")) <= 65535:
        raise ValueError(f'expected "host:port" (e.g. "127.0.0.1:9310"), got {value[:80]!r}')
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
        raise ValueError(f'unknown signal {value[:32]!r} (use e.g. "TERM", "INT", "QUIT", "HUP")')
    return name


SignalName = Annotated[str, BeforeValidator(signal_name)]


class Model(BaseModel):
    """Frozen and strict; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BackoffConfig(Model):
    """Delays between consecutive restarts (see `supervision.policy.backoff_delay`)."""

    initial: Annotated[float, Seconds(0, HOUR, low_open=True)] = 1.0
    factor: Annotated[float, Between(1, 100)] = 2.0
    max: Annotated[float, Seconds(0, DAY, low_open=True)] = 300.0
    jitter: Fraction = 0.1

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

    max_restarts: Count = 10
    within: Annotated[float, Seconds(0, WEEK, low_open=True)] = 300.0


ResetAfter = Annotated[float, Seconds(0, WEEK)]
FatalRetry = Annotated[float, Seconds(0, WEEK, low_open=True)]


class RestartConfig(Model):
    """When and how fast a failed resource is started again."""

    policy: Literal["always", "on-failure", "never"] = "always"
    backoff: BackoffConfig = BackoffConfig()
    reset_after: ResetAfter = 600.0
    intensity: IntensityConfig = IntensityConfig()
    fatal_retry: FatalRetry | None = None

    @property
    def fatal_retry_after(self) -> float:
        """How long a FATAL resource waits before it is tried again."""
        return self.backoff.max if self.fatal_retry is None else self.fatal_retry

    def merged(self, overrides: RestartOverrides) -> RestartConfig:
        """Return these settings with a resource's overrides applied key by key."""
        if overrides == _NO_OVERRIDES:
            return self  # shared by every resource without overrides (frozen)
        data = self.model_dump()
        for key, value in overrides.model_dump(exclude_none=True).items():
            if isinstance(value, dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return RestartConfig.model_validate(data)


class BackoffOverrides(Model):
    initial: Annotated[float, Seconds(0, HOUR, low_open=True)] | None = None
    factor: Annotated[float, Between(1, 100)] | None = None
    max: Annotated[float, Seconds(0, DAY, low_open=True)] | None = None
    jitter: Fraction | None = None


class IntensityOverrides(Model):
    max_restarts: Count | None = None
    within: Annotated[float, Seconds(0, WEEK, low_open=True)] | None = None


class RestartOverrides(Model):
    """A resource's `restart` table: any subset of `[defaults.restart]`."""

    policy: Literal["always", "on-failure", "never"] | None = None
    backoff: BackoffOverrides | None = None
    reset_after: ResetAfter | None = None
    intensity: IntensityOverrides | None = None
    fatal_retry: FatalRetry | None = None


_NO_OVERRIDES = RestartOverrides()


class ProbeBase(Model):
    exec: Command | None = None
    http: Annotated[str, StringConstraints(max_length=2048)] | None = None
    tcp: Annotated[str, AfterValidator(host_port)] | None = None
    timeout: Annotated[float, Seconds(0, HOUR, low_open=True)] = 2.0

    @field_validator("http")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"expected an http:// or https:// URL, got {value[:80]!r}")
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


Failures = Annotated[int, Between(1, 1000)]


class HealthProbeConfig(ProbeBase):
    """A periodic check while RUNNING; `failures` consecutive failures restart the resource."""

    interval: Interval = 5.0
    failures: Failures = 3


class StartupProbeConfig(ProbeBase):
    """A readiness gate: STARTING becomes RUNNING once this probe first succeeds."""

    interval: Annotated[float, Seconds(0, HOUR, low_open=True)] = 0.5


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


class ResourceSpec(Model):
    """What every resource kind's config answers about itself (kinds override these
    instead of callers asking `isinstance`)."""

    # Fields a running resource of this kind takes in place (see config.diff).
    in_place_fields: ClassVar[frozenset[str]] = IN_PLACE_FIELDS

    def docker_hosts(self) -> list[str | None]:
        """The Docker engines it needs (None: the local one)."""
        return []

    def rebuilt_with(self) -> tuple[str, ...]:
        """Resources whose rebuild on reload rebuilds this one too."""
        return ()

    def adoptable(self) -> bool:
        """Whether a running instance left by a previous run may be taken over."""
        return False

    def makes_enterprise_workers(self) -> bool:
        """Whether it is a Deephaven Enterprise factory (a sandbox backend logs in with it)."""
        return False

    def instance_count(self) -> int | None:
        """`instances`, for kinds that run several copies of themselves; else None."""
        return None

    def as_instance(self, index: int, depends_on: list[str]) -> Self:
        """Copy `index` of `instance_count()` copies (only kinds that have instances)."""
        raise TypeError(f"{type(self).__name__} has no instances")

    def cross_problems(
        self, name: str, resources: Mapping[str, ResourceSpec]
    ) -> list[tuple[str, str]]:
        """Problems that show only against the other resources: (path, message) pairs."""
        return []

    def log_target_problem(self, target: str) -> str | None:
        """Why this kind cannot keep its output at `target` (the effective `log.target`,
        its own or `[defaults.log]`'s), or None if it can or keeps none of its own."""
        return None


def engine_url(value: str | None) -> str | None:
    """A Docker engine URL: unix:///path, or tcp|http|https://host:port."""
    if value is None:
        return value
    hint = 'expected an engine URL such as "unix:///var/run/docker.sock" or "tcp://10.0.0.5:2376"'
    match = re.match(r"^(unix|tcp|http|https)://(.+)$", value)
    if match is None:
        raise ValueError(f"{hint}, got {value[:80]!r}")
    if match.group(1) != "unix":
        host, _, port = match.group(2).rstrip("/").rpartition(":")
        if not host or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
            raise ValueError(f"{hint} (host:port with a port number), got {value[:80]!r}")
    return value


EngineUrl = Annotated[str, AfterValidator(engine_url)]
