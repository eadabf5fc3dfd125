"""`[environments.NAME]`: a warm pool of sandboxes, its backend, limits and features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from supervisor.config.types import (
    ByteSize,
    Command,
    Duration,
    EngineUrl,
    Model,
    PositiveDuration,
)

Hook = Literal["setup", "teardown", "setup_session", "teardown_session", "housekeep"]
FeatureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class _FeatureBase(Model):
    name: FeatureName | None = None  # default: the kind, numbered when repeated
    housekeep_interval: PositiveDuration | None = None


class CommandFeatureConfig(_FeatureBase):
    """Commands run in the sandbox (or on the host, for `scope = "environment"`) per hook."""

    kind: Literal["command"]
    scope: Literal["sandbox", "environment"] = "sandbox"
    setup: Command | None = None
    teardown: Command | None = None
    setup_session: Command | None = None
    teardown_session: Command | None = None
    housekeep: Command | None = None
    timeout: PositiveDuration = 60.0

    @model_validator(mode="after")
    def _some_hook(self) -> Self:
        hooks = ("setup", "teardown", "setup_session", "teardown_session", "housekeep")
        if all(getattr(self, h) is None for h in hooks):
            raise ValueError(f"give at least one hook command ({', '.join(hooks)})")
        if self.scope == "environment" and (self.setup_session or self.teardown_session):
            raise ValueError("an environment-scoped command has no session hooks")
        return self


class FilesFeatureConfig(_FeatureBase):
    """Copies a local file or directory into every sandbox at setup."""

    kind: Literal["files"]
    source: Path
    dest: str = "."


class DeephavenScriptFeatureConfig(_FeatureBase):
    """Scripts run in a Deephaven sandbox's server at setup and around each session."""

    kind: Literal["deephaven_script"]
    setup: str | None = None
    setup_session: str | None = None
    teardown_session: str | None = None
    timeout: PositiveDuration = 60.0


class PluginFeatureConfig(_FeatureBase):
    """A third-party feature from the `supervisor.features` entry-point group."""

    kind: Literal["plugin"]
    entry_point: Annotated[str, StringConstraints(min_length=1)]
    options: dict[str, Any] = {}


FeatureConfig = Annotated[
    CommandFeatureConfig | FilesFeatureConfig | DeephavenScriptFeatureConfig | PluginFeatureConfig,
    Field(discriminator="kind"),
]


class ProcessLimits(Model):
    """rlimits applied to every command run in a `process` sandbox."""

    cpu_time: PositiveDuration | None = 60.0
    memory: ByteSize | None = 1 << 30
    open_files: int | None = Field(256, ge=16)
    processes: int | None = Field(256, ge=1)
    file_size: ByteSize | None = 1 << 30


class DockerSandboxConfig(Model):
    """How a `docker` sandbox's container is made."""

    image: Annotated[str, StringConstraints(min_length=1)]
    docker_host: EngineUrl | None = None  # default: the local engine (DOCKER_HOST or socket)
    cpus: float | None = Field(None, gt=0)
    memory: ByteSize | None = None
    pids_limit: int | None = Field(256, ge=1)
    network: str = "none"
    read_only: bool = True
    workdir: str = "/work"
    tmpfs_size: ByteSize = 256 << 20
    command: Command = ["sleep", "infinity"]


class DeephavenSandboxConfig(Model):
    """How a `deephaven` sandbox's server is launched."""

    launch: Literal["python", "docker"] = "python"
    heap: str = "1g"
    jvm_args: list[str] = []
    image: str | None = None
    python_venv: Path | None = None
    start_timeout: PositiveDuration = 120.0


class EnvironmentConfig(Model):
    """A pool of `min_ready`..`max_size` sandboxes handed out as leased sessions."""

    backend: Literal["process", "docker", "deephaven"] = "process"
    min_ready: int = Field(1, ge=0)
    max_size: int = Field(8, ge=0)
    acquire_timeout: Duration = 30.0
    session_ttl: PositiveDuration = 3600.0
    lease: PositiveDuration = 60.0
    proactive_session_setup: bool = True
    housekeep_interval: PositiveDuration = 10.0
    keepalive_interval: PositiveDuration = 30.0
    outage_grace: Duration = 300.0
    outage_retry_interval: PositiveDuration = 10.0
    max_sandbox_age: PositiveDuration | None = None
    max_sessions_per_sandbox: int | None = Field(None, ge=1)
    idle_timeout: PositiveDuration | None = None
    recycle_jitter: float = Field(0.1, ge=0.0, lt=1.0)
    exec_timeout: PositiveDuration = 60.0
    output_limit: ByteSize = 1 << 20
    shutdown_concurrency: int = Field(16, ge=1)
    limits: ProcessLimits = ProcessLimits()
    docker: DockerSandboxConfig | None = None
    deephaven: DeephavenSandboxConfig | None = None
    features: list[FeatureConfig] = []

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.min_ready > self.max_size and self.max_size > 0:
            raise ValueError(f"min_ready ({self.min_ready}) must be <= max_size ({self.max_size})")
        if self.max_size == 0 and self.min_ready > 0:
            raise ValueError("max_size = 0 (a fresh sandbox per session) needs min_ready = 0")
        if self.backend == "docker" and self.docker is None:
            raise ValueError('backend "docker" needs a [docker] table with at least image')
        if self.backend != "docker" and self.docker is not None:
            raise ValueError(
                f'a [docker] table only applies to backend "docker", not {self.backend!r}'
            )
        if self.backend != "deephaven" and self.deephaven is not None:
            raise ValueError(
                f'a [deephaven] table only applies to backend "deephaven", not {self.backend!r}'
            )
        return self

    def feature_names(self) -> list[str]:
        """Each feature's name: its `name`, else its kind (numbered when repeated)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for feature in self.features:
            base = feature.name or feature.kind
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return names
