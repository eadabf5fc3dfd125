"""`kind = "deephaven-enterprise"`: a session factory of an Enterprise system, or a session.

One kind, two roles, told apart by the key that only makes sense for each:
`connection_json_url` makes a *factory* (one per system: it logs in and is pinged), and
`factory = "NAME"` makes a *session* of that factory's system (it connects to a persistent
query by `pq_name`, or creates a worker of `heap`). A session's factory is added to its
`depends_on`, so start order, cycle and unknown-name checks need nothing new.

Pure: imports nothing from the package but other config modules. As in `config.deephaven`,
cross-field rules are validators on the later field, so errors carry the exact key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import (
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from supervisor.config.deephaven import Heap, LivenessConfig, parse_heap
from supervisor.config.types import (
    HOUR,
    WEEK,
    FilePath,
    Grace,
    Name,
    ResourceSpec,
    RestartOverrides,
    Seconds,
    SecretEnvName,
    Timeout,
)

_FACTORY_ONLY = (
    "system",
    "truststore",
    "auth",
    "username",
    "password_env",
    "password_file",
    "private_key_file",
    "connection_timeout",
    "python_venv",
)
_SESSION_ONLY = ("pq_name", "heap", "jvm_args", "auto_delete_timeout", "programming_language")
_WORKER_ONLY = ("heap", "jvm_args", "auto_delete_timeout", "programming_language")


def _http_url(value: object) -> object:
    if isinstance(value, str) and not value.startswith(("http://", "https://")):
        raise ValueError(
            'expected an http(s) URL, e.g. "https://dh.example.com:8000/iris/connection.json"'
        )
    return value


class DeephavenEnterpriseConfig(ResourceSpec):
    """An Enterprise (Core+) session factory, or a session made by one."""

    kind: Literal["deephaven-enterprise"]
    connection_json_url: Annotated[str, StringConstraints(min_length=1)] | None = None
    factory: Name | None = None
    # Factory settings.
    system: Name | None = None  # the system's name in full names; default: the resource name
    truststore: FilePath | None = None  # PEM trust store for a private CA
    auth: Literal["password", "private_key"] | None = None
    username: Annotated[str, StringConstraints(min_length=1)] | None = None
    password_env: SecretEnvName | None = None
    password_file: FilePath | None = None
    private_key_file: FilePath | None = None
    connection_timeout: Annotated[float, Seconds(0, HOUR, low_open=True)] = 10.0
    # The venv with deephaven-coreplus-client whose Python runs the client helpers of this
    # factory and its sessions (the client pins its own pydeephaven); default: the daemon's.
    python_venv: FilePath | None = None
    # Session settings: a persistent query by name, or a new worker.
    pq_name: Annotated[str, StringConstraints(min_length=1)] | None = None
    heap: Heap | None = None
    jvm_args: list[str] = []
    auto_delete_timeout: Annotated[float, Seconds(0, WEEK)] | None = 600.0
    programming_language: Literal["python", "groovy"] = "python"
    liveness: LivenessConfig = LivenessConfig()
    # Generic supervision settings, as for every kind.
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: Timeout = 120.0
    stop_timeout: Grace = 10.0
    restart: RestartOverrides = RestartOverrides()

    @model_validator(mode="before")
    @classmethod
    def _factory_is_a_dependency(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("factory"), str):
            depends_on = data.get("depends_on", [])
            if isinstance(depends_on, list) and data["factory"] not in depends_on:
                data = {**data, "depends_on": [*depends_on, data["factory"]]}
        return data

    @field_validator("connection_json_url", mode="before")
    @classmethod
    def _url(cls, value: object) -> object:
        return _http_url(value)

    @field_validator("factory")
    @classmethod
    def _one_role(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("connection_json_url") is not None:
            raise ValueError(
                "a resource is either a factory (connection_json_url) or a session "
                "(factory), not both"
            )
        return value

    @field_validator(*_FACTORY_ONLY, *_SESSION_ONLY)
    @classmethod
    def _role_fields(cls, value: object, info: ValidationInfo) -> object:
        name = info.field_name
        default = cls.model_fields[name or ""].default
        if value is None or value == default:
            return value
        # A key that failed validation is absent from `info.data`: no follow-up errors.
        if name in _FACTORY_ONLY and info.data.get("connection_json_url", "") is None:
            raise ValueError("only used by a factory (a resource with connection_json_url)")
        if name in _SESSION_ONLY and info.data.get("factory", "") is None:
            raise ValueError('only used by a session (a resource with factory = "NAME")')
        if name in _WORKER_ONLY and info.data.get("pq_name") is not None:
            raise ValueError("only used to create a worker (drop pq_name, or drop this key)")
        return value

    @field_validator("password_env", "password_file", "private_key_file")
    @classmethod
    def _credentials(cls, value: object, info: ValidationInfo) -> object:
        if value is None:
            return value
        auth = info.data.get("auth")
        if info.field_name == "private_key_file":
            if auth != "private_key":
                raise ValueError('only used with auth = "private_key"')
            return value
        if auth != "password":
            raise ValueError('only used with auth = "password"')
        if info.field_name == "password_file" and info.data.get("password_env") is not None:
            raise ValueError("set only one of password_env or password_file")
        return value

    @model_validator(mode="after")
    def _role_rules(self) -> Self:
        if self.connection_json_url is None and self.factory is None:
            raise ValueError(
                "set connection_json_url (a factory for an Enterprise system) or "
                'factory = "NAME" (a session made by that factory)'
            )
        if self.is_factory:
            if self.auth is None:
                raise ValueError('auth is required: "password" or "private_key"')
            if self.auth == "password":
                if self.username is None:
                    raise ValueError('username is required with auth = "password"')
                if self.password_env is None and self.password_file is None:
                    raise ValueError('auth = "password" needs one of password_env or password_file')
            elif self.private_key_file is None:
                raise ValueError('private_key_file is required with auth = "private_key"')
            if self.username is not None and self.auth != "password":
                raise ValueError('username: only used with auth = "password"')
        elif self.pq_name is None and self.heap is None:
            raise ValueError(
                "a session needs pq_name (connect to a persistent query) or heap "
                '(create a worker with that heap, e.g. heap = "4g")'
            )
        return self

    def rebuilt_with(self) -> tuple[str, ...]:
        return () if self.factory is None else (self.factory,)  # it holds the factory's object

    def cross_problems(
        self, name: str, resources: Mapping[str, ResourceSpec]
    ) -> list[tuple[str, str]]:
        factory = resources.get(self.factory) if self.factory is not None else None
        if factory is None or (
            isinstance(factory, DeephavenEnterpriseConfig) and factory.is_factory
        ):
            return []
        return [
            (
                f"resources.{name}.factory",
                f"{self.factory!r} is not a deephaven-enterprise factory "
                "(one with connection_json_url)",
            )
        ]

    def makes_enterprise_workers(self) -> bool:
        return self.is_factory

    @property
    def is_factory(self) -> bool:
        return self.connection_json_url is not None

    @property
    def heap_gb(self) -> float | None:
        """The worker heap in GB, as the Enterprise controller takes it."""
        return None if self.heap is None else parse_heap(self.heap) / 1024
