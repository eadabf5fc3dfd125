"""`[environments.NAME]`: a warm pool of sandboxes, its backend, limits and features."""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from supervisor.config.deephaven import Heap
from supervisor.config.swarm import EngineTls, SwarmSandboxConfig
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
    Name,
    PidsLimit,
    Seconds,
    Sensitive,
    Timeout,
)


def _inside(dest: str) -> str:
    """A path inside the sandbox: relative, and never up through `..`."""
    if dest.startswith("/") or ".." in PurePosixPath(dest).parts:
        raise ValueError(
            f"must be a path inside the sandbox (relative, no '..'), got {dest[:80]!r}"
        )
    return dest


# A pool's size bounds what exists, never what is allocated up front (see sandbox.pool);
# the bound is what one daemon was measured to hold (bench/scrape.py runs 10,000).
MAX_POOL = 10_000
PoolSize = Annotated[int, Between(0, MAX_POOL)]
MemorySize = Annotated[int, Bytes(MIB, TIB)]
MAX_UID = 4_294_967_294  # (uid_t)-1 is "no uid"
PROCESS_ISOLATION_FIELDS = frozenset({"isolation", "network", "uids", "cgroup"})

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
    dest: Annotated[
        str, StringConstraints(min_length=1, max_length=4096), AfterValidator(_inside)
    ] = "."


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
    options: Annotated[dict[str, Any], Sensitive()] = {}  # may carry credentials

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


class UidRange(Model):
    """The host uids given to `process` sandboxes: each sandbox runs as one of its own."""

    first: Annotated[int, Between(1000, MAX_UID)] = 1_800_000_000
    count: Annotated[int, Between(1, 1 << 24)] = 65_536

    @model_validator(mode="after")
    def _fits(self) -> Self:
        if self.first + self.count - 1 > MAX_UID:
            raise ValueError(f"first + count - 1 must be at most {MAX_UID}")
        return self

    def contains(self, uid: int) -> bool:
        return self.first <= uid < self.first + self.count


class CgroupLimits(Model):
    """Caps on everything one `process` sandbox runs, together (a cgroup per sandbox)."""

    memory: Annotated[int, Bytes(16 * MIB, TIB)] | None = GIB
    processes: PidsLimit | None = 512


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
    # Not root, no capabilities, no setuid gains: what a sandbox needs, and no more.
    user: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")] | None
    ) = "65534:65534"
    cap_drop: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,32}$")]] = ["ALL"]
    cap_add: list[Annotated[str, StringConstraints(pattern=r"^[A-Z_]{1,32}$")]] = []
    no_new_privileges: bool = True
    runtime: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] | None
    ) = None


class DeephavenSandboxConfig(Model):
    """How a `deephaven` sandbox's server is launched."""

    launch: Literal["python", "docker"] = "python"
    heap: Heap = "1g"
    jvm_args: list[str] = []
    image: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = None
    python_venv: FilePath | None = None
    start_timeout: Timeout = 120.0


class DeephavenEnterpriseSandboxConfig(Model):
    """How a `deephaven-enterprise` sandbox's worker is made, through a factory's login."""

    factory: Name  # a deephaven-enterprise resource with connection_json_url
    heap: Heap = "4g"
    jvm_args: list[str] = []
    # The server deletes a worker whose session is gone this long (our last resort).
    auto_delete_timeout: Annotated[float, Seconds(60, WEEK)] = 600.0
    start_timeout: Timeout = 120.0


class EnvironmentConfig(Model):
    """A pool of `min_ready`..`max_size` sandboxes handed out as leased sessions."""

    backend: Literal["process", "docker", "deephaven", "deephaven-enterprise", "swarm"] = "process"
    min_ready: PoolSize = 1
    max_size: PoolSize = 8
    acquire_timeout: Annotated[float, Seconds(0, HOUR)] = 30.0
    session_ttl: Annotated[float, Seconds(0, WEEK, low_open=True)] = 3600.0
    lease: Annotated[float, Seconds(0, DAY, low_open=True)] = 120.0
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
    file_limit: Annotated[int, Bytes(KIB, 4 * GIB)] = 64 * MIB
    shutdown_concurrency: Annotated[int, Between(1, 1024)] = 16
    limits: ProcessLimits = ProcessLimits()
    # `process` only: the sandbox's namespaces, its network, its uid and its cgroup caps.
    isolation: Literal["bubblewrap", "none"] = "bubblewrap"
    network: Literal["none", "host"] = "none"
    uids: UidRange = UidRange()
    cgroup: CgroupLimits = CgroupLimits()
    docker: DockerSandboxConfig | None = None
    deephaven: DeephavenSandboxConfig | None = None
    deephaven_enterprise: DeephavenEnterpriseSandboxConfig | None = None
    swarm: SwarmSandboxConfig | None = None
    features: list[FeatureConfig] = []

    @model_validator(mode="before")
    @classmethod
    def _one_session_per_worker(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("backend") == "deephaven-enterprise":
            data = {"max_sessions_per_sandbox": 1, **data}
        return data

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
        if (self.backend == "swarm") != (self.swarm is not None):
            raise ValueError(
                'backend "swarm" needs a [swarm] table (manager, nodes, image), '
                "and only it takes one"
            )
        process_only = PROCESS_ISOLATION_FIELDS & self.model_fields_set
        if self.backend != "process" and process_only:
            raise ValueError(
                f'{", ".join(sorted(process_only))}: only for backend "process" '
                f"(this one is {self.backend!r})"
            )
        if self.isolation == "none" and {"network", "uids", "cgroup"} & self.model_fields_set:
            raise ValueError('network, uids and cgroup need isolation = "bubblewrap"')
        if self.backend != "deephaven" and self.deephaven is not None:
            raise ValueError(
                f'a [deephaven] table only applies to backend "deephaven", not {self.backend!r}'
            )
        if (self.backend == "deephaven-enterprise") != (self.deephaven_enterprise is not None):
            raise ValueError(
                'backend "deephaven-enterprise" needs a [deephaven_enterprise] table '
                "(factory, heap), and only it takes one"
            )
        if self.backend == "deephaven-enterprise" and self.max_sessions_per_sandbox not in (
            None,
            1,
        ):
            raise ValueError(
                "max_sessions_per_sandbox: a deephaven-enterprise worker serves one session "
                "(it is deleted on release); leave it out"
            )
        return self

    def docker_hosts(self) -> list[str | None]:
        """The Docker engines its sandboxes need (None: the local one)."""
        if self.docker is not None:
            return [self.docker.docker_host]
        if self.deephaven is not None and self.deephaven.launch == "docker":
            return [None]
        if self.swarm is not None:
            return [e.host for e in self.swarm.endpoints()]
        return []

    def docker_tls(self) -> dict[str, EngineTls]:
        """Client TLS for the engines it names with their own (by host)."""
        if self.swarm is None:
            return {}
        return {e.host: e.tls for e in self.swarm.endpoints() if e.tls is not None}

    def feature_names(self) -> list[str]:
        """Each feature's name: its `name`, else its kind (numbered when repeated)."""
        names: list[str] = []
        seen: dict[str, int] = {}
        for feature in self.features:
            base = feature.name or feature.kind
            seen[base] = seen.get(base, 0) + 1
            names.append(base if seen[base] == 1 else f"{base}-{seen[base]}")
        return names
