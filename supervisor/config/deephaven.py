"""`kind = "deephaven"`: a Deephaven session, connected to a server or to one the daemon launches.

Pure: imports nothing from the package but `config.types`. Cross-field rules are field
validators on the later field (fields validate in declaration order, so `info.data` holds
the earlier ones): the error then carries the exact key path, e.g.
`resources.dh.token_env: set only one of token, token_env or token_file`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BeforeValidator,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from supervisor.config.output import LogOverrides
from supervisor.config.types import (
    HOUR,
    MIB,
    TIB,
    Between,
    Bytes,
    Cpus,
    EnvName,
    EnvValue,
    Failures,
    FilePath,
    Grace,
    Interval,
    Model,
    Name,
    ResourceSpec,
    RestartOverrides,
    Seconds,
    Secret,
    SecretEnvName,
    Timeout,
)

PSK_HANDLER = "io.deephaven.authentication.psk.PskAuthenticationHandler"
DEFAULT_IMAGE = "ghcr.io/deephaven/server:latest"

_HEAP = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[mMgG])$")
_HANDLER_CLASS = re.compile(r"^[A-Za-z_$][\w$]*(?:\.[A-Za-z_$][\w$]*)+$")
_SHORT_AUTH = {"anonymous": "Anonymous", "basic": "Basic", "psk": PSK_HANDLER}


def parse_heap(value: str) -> int:
    """Heap size in MB from "512m", "1g" or "2.5g" (2.5g -> 2560).

    Raises:
        ValueError: with a message that says what to write instead.
    """
    match = _HEAP.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f'invalid heap size {value!r} (use e.g. "512m", "1g" or "2.5g")')
    if len(match.group("amount")) > 12:
        raise ValueError(f"heap {value[:16]!r}... is far too large (at most 1024g)")
    amount = float(match.group("amount"))
    megabytes = int(amount * 1024) if match.group("unit") in "gG" else int(amount)
    if megabytes < 64:
        raise ValueError(f"heap {value!r} is too small (at least 64m)")
    if megabytes > 1024 * 1024:
        raise ValueError(f"heap {value!r} is too large (at most 1024g)")
    return megabytes


def normalise_auth(value: object) -> str:
    """ "anonymous"/"basic"/"psk" (any case) to what pydeephaven sends; class names as they are."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError('expected "anonymous", "basic", "psk" or a handler class name')
    text = value.strip()
    if text.lower() in _SHORT_AUTH:
        return _SHORT_AUTH[text.lower()]
    if _HANDLER_CLASS.match(text):
        return text
    raise ValueError(
        f'unknown auth {value!r} (use "anonymous", "basic", "psk" or a fully qualified '
        'handler class name such as "io.deephaven.authentication.psk.PskAuthenticationHandler")'
    )


def _heap(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f'expected a heap size such as "1g" or "512m", got {value!r}')
    parse_heap(value)
    return value


def _port(value: object) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    if isinstance(value, bool) or not isinstance(value, int):
        shown = repr(value) if isinstance(value, str | float) else type(value).__name__
        raise ValueError(f'expected a port number (1-65535) or "auto", got {shown}')
    if not 1 <= value <= 65535:
        raise ValueError(f"port must be between 1 and 65535, got {value}")
    return value


AuthName = Annotated[str, BeforeValidator(normalise_auth)]
Heap = Annotated[str, BeforeValidator(_heap)]
Port = Annotated[int | Literal["auto"], BeforeValidator(_port), Between(1, 65535)]

_LAUNCH_ONLY = ("heap", "jvm_args", "env")
_PYTHON_ONLY = ("python_venv",)
_DOCKER_ONLY = ("image", "memory", "cpus", "volumes")
_TLS_FILES = ("tls_root_certs", "client_cert_chain", "client_private_key")


class LivenessConfig(Model):
    """A real RPC every `interval`, bounded by `timeout`; `failures` in a row restart it."""

    interval: Interval = 10.0
    timeout: Annotated[float, Seconds(0, HOUR, low_open=True)] = 5.0
    failures: Failures = 2


class DeephavenConfig(ResourceSpec):
    """A Deephaven session; with `launch`, also the server it talks to."""

    kind: Literal["deephaven"]
    launch: Literal["python", "docker"] | None = None
    host: Annotated[str, StringConstraints(min_length=1)] = "127.0.0.1"
    port: Port | None = None  # required to connect; "auto" by default when launched
    auth: AuthName | None = None  # "anonymous" to connect, "psk" when launched
    token: Secret | None = None
    token_env: SecretEnvName | None = None
    token_file: FilePath | None = None
    use_tls: bool = False
    tls_root_certs: FilePath | None = None
    client_cert_chain: FilePath | None = None
    client_private_key: FilePath | None = None
    session_type: Literal["python", "groovy"] = "python"
    lazy: bool = False
    # Launch settings (python and docker).
    heap: Heap | None = None
    jvm_args: list[str] = []
    env: dict[EnvName, EnvValue] = {}
    python_venv: FilePath | None = None
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    memory: Annotated[int, Bytes(64 * MIB, TIB)] | None = None
    cpus: Cpus | None = None
    volumes: list[str] = []
    liveness: LivenessConfig = LivenessConfig()
    # Generic supervision settings, as for every kind.
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: Timeout = 60.0
    stop_timeout: Grace = 10.0
    restart: RestartOverrides = RestartOverrides()
    # A python-launched server's output, kept as a process's is (`supervisor logs`).
    log: LogOverrides = LogOverrides()
    log_output: bool = False  # true: also relay its lines into the daemon's log

    def log_target_problem(self, target: str) -> str | None:
        if target != "journald" or self.launch != "python":
            return None
        return (
            "a launched Deephaven server's output is redacted by the daemon, so it cannot "
            'go to journald: set log = { target = "file" } (or "memory") on this resource'
        )

    @field_validator("port")
    @classmethod
    def _auto_only_when_launched(
        cls, value: int | Literal["auto"] | None, info: ValidationInfo
    ) -> int | Literal["auto"] | None:
        if value == "auto" and info.data.get("launch") is None:
            raise ValueError('"auto" is only for launched servers (set launch, or a port number)')
        return value

    @field_validator("token_env", "token_file")
    @classmethod
    def _one_token_source(cls, value: object, info: ValidationInfo) -> object:
        earlier = [k for k in ("token", "token_env") if info.data.get(k) is not None]
        earlier = [k for k in earlier if k != info.field_name]
        if value is not None and earlier:
            raise ValueError(
                f"set only one of token, token_env or token_file (also set: {', '.join(earlier)})"
            )
        return value

    @field_validator(*_TLS_FILES)
    @classmethod
    def _tls_needs_use_tls(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is not None and not info.data.get("use_tls"):
            raise ValueError("only used with use_tls = true")
        return value

    @field_validator(*_LAUNCH_ONLY, *_PYTHON_ONLY, *_DOCKER_ONLY)
    @classmethod
    def _launch_fields(cls, value: object, info: ValidationInfo) -> object:
        if value is None or value in ([], {}):  # unset, or an empty default written out
            return value
        launch = info.data.get("launch")
        if info.field_name in _LAUNCH_ONLY and launch is None:
            raise ValueError('only used with launch = "python" or launch = "docker"')
        if info.field_name in _PYTHON_ONLY and launch != "python":
            raise ValueError('only used with launch = "python"')
        if info.field_name in _DOCKER_ONLY and launch != "docker":
            raise ValueError('only used with launch = "docker"')
        return value

    @model_validator(mode="after")
    def _mode_rules(self) -> Self:
        if self.launch is None and self.port is None:
            raise ValueError("port is required to connect (or set launch to start a server)")
        if self.launch is not None and self.use_tls:
            raise ValueError("use_tls: launched servers serve plain gRPC on their host")
        has_token = any(v is not None for v in (self.token, self.token_env, self.token_file))
        if self.auth_type == "Anonymous" and has_token:
            raise ValueError("a token is set but auth is anonymous (set auth, or drop the token)")
        if self.auth_type != "Anonymous" and not has_token:
            generated = self.launch is not None and self.auth_type == PSK_HANDLER
            if not generated:
                raise ValueError(
                    f"auth {self.auth!r} needs a token: set one of token, token_env or token_file"
                )
        if self.launch is not None and self.auth_type not in ("Anonymous", PSK_HANDLER):
            raise ValueError('auth: a launched server supports "anonymous" or "psk"')
        if self.client_cert_chain is None and self.client_private_key is not None:
            raise ValueError("client_private_key needs client_cert_chain")
        return self

    def docker_hosts(self) -> list[str | None]:
        return [None] if self.launch == "docker" else []

    @property
    def auth_type(self) -> str:
        """The effective auth type as pydeephaven sends it."""
        if self.auth is not None:
            return self.auth
        return PSK_HANDLER if self.launch is not None else "Anonymous"

    @property
    def heap_mb(self) -> int | None:
        return None if self.heap is None else parse_heap(self.heap)

    @property
    def docker_image(self) -> str:
        return self.image or DEFAULT_IMAGE
