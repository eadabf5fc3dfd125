"""`[environments.NAME]`: a warm pool of sandboxes, its backend, limits and features."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from supervisor.config.deephaven import Heap
from supervisor.config.types import (
    DAY,
    GIB,
    HOUR,
    KIB,
    MIB,
    TIB,
    WEEK,
    Between,
    Bytes,
    Command,
    Cpus,
    EngineUrl,
    FilePath,
    Fraction,
    Grace,
    Interval,
    Lifetime,
    Model,
    PidsLimit,
    Seconds,
    Timeout,
)

# A pool's size bounds what exists, never what is allocated up front (see sandbox.pool);
# the bound is what one daemon was measured to hold (bench/scrape.py runs 10,000).
MAX_POOL = 10_000
PoolSize = Annotated[int, Between(0, MAX_POOL)]
MemorySize = Annotated[int, Bytes(MIB, TIB)]

Hook = Literal["setup", "teardown", "setup_session", "teardown_session", "housekeep"]
FeatureName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class _FeatureBase(Model):
    name: FeatureName | None = None  # default: the kind, numbered when repeated
    housekeep_interval: Interval | None = None

    def plugin(self) -> str | None:
        """The entry point it is loaded from, if it is a third-party feature."""
        return None


class CommandFeatureConfig(_FeatureBase):
    """Commands run in the sandbox (or on the host, for `scope = "environment"`) per hook."""

    kind: Literal["command"]
    scope: Literal["sandbox", "environment"] = "sandbox"
    setup: Command | None = None
    teardown: Command | None = None
    setup_session: Command | None = None
    teardown_session: Command | None = None
    housekeep: Command | None = None
    timeout: Timeout = 60.0

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
    source: FilePath
    dest: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = "."


class DeephavenScriptFeatureConfig(_FeatureBase):
    """Scripts run in a Deephaven sandbox's server at setup and around each session."""

    kind: Literal["deephaven_script"]
    setup: str | None = None
    setup_session: str | None = None
    teardown_session: str | None = None
    timeout: Timeout = 60.0


class PluginFeatureConfig(_FeatureBase):
    """A third-party feature from the `supervisor.features` entry-point group."""

    kind: Literal["plugin"]
    entry_point: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    options: dict[str, Any] = {}

    def plugin(self) -> str | None:
        return self.entry_point


FeatureConfig = Annotated[
    CommandFeatureConfig | FilesFeatureConfig | DeephavenScriptFeatureConfig | PluginFeatureConfig,
    Field(discriminator="kind"),
]


class ProcessLimits(Model):
    """rlimits applied to every command run in a `process` sandbox."""

    cpu_time: Annotated[float, Seconds(0, WEEK, low_open=True)] | None = 60.0
    memory: MemorySize | None = GIB
    open_files: Annotated[int, Between(16, 1 << 20)] | None = 256  # 1 << 20: nr_open's default
    processes: PidsLimit | None = 256
    file_size: Annotated[int, Bytes(0, TIB)] | None = GIB


class DockerSandboxConfig(Model):
    """How a `docker` sandbox's container is made."""

    image: Annotated[str, StringConstraints(min_length=1)]
    docker_host: EngineUrl | None = None  # default: the local engine (DOCKER_HOST or socket)
    cpus: Cpus | None = None
    memory: Annotated[int, Bytes(6 * MIB, TIB)] | None = None
    pids_limit: PidsLimit | None = 256
    network: Annotated[str, StringConstraints(min_length=1, max_length=128)] = "none"
    read_only: bool = True
    workdir: Annotated[str, StringConstraints(pattern=r"^/", max_length=4096)] = "/work"
    tmpfs_size: Annotated[int, Bytes(MIB, TIB)] = 256 * MIB
    command: Command = ["sleep", "infinity"]


class DeephavenSandboxConfig(Model):
    """How a `deephaven` sandbox's server is launched."""

    launch: Literal["python", "docker"] = "python"
    heap: Heap = "1g"
    jvm_args: list[str] = []
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    python_venv: FilePath | None = None
    start_timeout: Timeout = 120.0


class EnvironmentConfig(Model):
    """A pool of `min_ready`..`max_size` sandboxes handed out as leased sessions."""

    backend: Literal["process", "docker", "deephaven"] = "process"
    min_ready: PoolSize = 1
    max_size: PoolSize = 8
    acquire_timeout: Annotated[float, Seconds(0, HOUR)] = 30.0
    session_ttl: Annotated[float, Seconds(0, WEEK, low_open=True)] = 3600.0
    lease: Annotated[float, Seconds(0, DAY, low_open=True)] = 60.0
    proactive_session_setup: bool = True
    housekeep_interval: Annotated[float, Seconds(0, HOUR, low_open=True)] = 10.0
    keepalive_interval: Annotated[float, Seconds(0, HOUR, low_open=True)] = 30.0
    outage_grace: Grace = 300.0
    outage_retry_interval: Annotated[float, Seconds(0, HOUR, low_open=True)] = 10.0
    max_sandbox_age: Lifetime | None = None
    max_sessions_per_sandbox: Annotated[int, Between(1, 1_000_000_000)] | None = None
    idle_timeout: Lifetime | None = None
    recycle_jitter: Fraction = 0.1
    exec_timeout: Timeout = 60.0
    output_limit: Annotated[int, Bytes(KIB, 64 * MIB)] = MIB
    shutdown_concurrency: Annotated[int, Between(1, 1024)] = 16
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

    def docker_hosts(self) -> list[str | None]:
        """The Docker engines its sandboxes need (None: the local one)."""
        if self.docker is not None:
            return [self.docker.docker_host]
        if self.deephaven is not None and self.deephaven.launch == "docker":
            return [None]
        return []

    def feature_names(self) -> list[str]:
        """Each feature's name: its `name`, else its kind (numbered when repeated)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for feature in self.features:
            base = feature.name or feature.kind
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return names
