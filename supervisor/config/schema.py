"""The config schema: typed, frozen, validated models of supervisor.toml.

Pure: imports nothing from the package. Field-level problems are pydantic validation
errors (turned into key paths by `config.load`); problems that span the whole file
(unknown `depends_on` targets, dependency cycles, restart settings that are only wrong
once a resource's overrides are merged over `[defaults.restart]`) come from
`Config.problems()`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, Field, ValidationError, model_validator

from supervisor.config.container import ContainerConfig
from supervisor.config.deephaven import DeephavenConfig
from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.config.environment import EnvironmentConfig
from supervisor.config.instances import (
    INSTANCE_ENV,
    INSTANCE_PLACEHOLDER,
    expand_groups,
    expand_resources,
    group_problems,
)
from supervisor.config.mcp import McpConfig
from supervisor.config.output import LogConfig, LogOverrides, RotationOverrides
from supervisor.config.paths import default_log_dir, default_socket_path, default_state_dir
from supervisor.config.secrets import secret_env_names
from supervisor.config.swarm import EngineTls
from supervisor.config.types import (
    MINUTE,
    Between,
    Command,
    EnvName,
    EnvValue,
    ExitCode,
    FilePath,
    Grace,
    HealthProbeConfig,
    MemberName,
    Model,
    Name,
    Principal,
    ResourceSpec,
    RestartConfig,
    RestartOverrides,
    Seconds,
    SignalName,
    StartupProbeConfig,
    Timeout,
    host_port,
    split_host_port,
)

__all__ = [
    "Config",
    "ContainerConfig",
    "DeephavenConfig",
    "DeephavenEnterpriseConfig",
    "McpConfig",
    "ProcessConfig",
    "ResourceConfig",
    "split_host_port",
]


class ProcessConfig(ResourceSpec):
    """`kind = "process"`: a local command, supervised like supervisord's programs."""

    kind: Literal["process"]
    command: Command
    cwd: FilePath | None = None
    env: dict[EnvName, EnvValue] = {}
    user: Principal | None = None
    group: Principal | None = None
    autostart: bool = True
    depends_on: list[Name] = []
    start_timeout: Timeout = 30.0
    stop_signal: SignalName = "SIGTERM"
    stop_timeout: Grace = 10.0
    success_exit_codes: list[ExitCode] = [0]
    log_output: bool = False
    log: LogOverrides = LogOverrides()
    startup: StartupProbeConfig | None = None
    health: HealthProbeConfig | None = None
    restart: RestartOverrides = RestartOverrides()
    instances: Annotated[int, Between(1, 1000)] | None = None

    def instance_count(self) -> int | None:
        return self.instances

    def as_instance(self, index: int, depends_on: list[str]) -> Self:
        """`{instance}` in the command becomes `index`; the environment says it too."""
        command = [arg.replace(INSTANCE_PLACEHOLDER, str(index)) for arg in self.command]
        env = {**self.env, INSTANCE_ENV: str(index)}
        update = {"instances": None, "command": command, "env": env, "depends_on": depends_on}
        return self.model_copy(update=update)


ResourceConfig = Annotated[
    ProcessConfig | ContainerConfig | DeephavenConfig | DeephavenEnterpriseConfig,
    Field(discriminator="kind"),
]


class ApiLimitsConfig(Model):
    """`[daemon.limits]`: what each API listener (the control socket, TCP) takes at once."""

    connections: Annotated[int, Between(16, 65_536)] = 512
    streams: Annotated[int, Between(1, 65_536)] = 128  # long-lived: events, log follow
    header_timeout: Annotated[float, Seconds(0.1, MINUTE * 5)] = 10.0

    @model_validator(mode="after")
    def _room_for_requests(self) -> Self:
        if self.streams >= self.connections:
            raise ValueError(
                f"streams ({self.streams}) must be below connections ({self.connections}): "
                "the difference is what short requests (the CLI) can always get"
            )
        return self


class TlsConfig(Model):
    """`daemon.tls = { cert, key }`: the TCP listener speaks TLS with this PEM pair."""

    cert: FilePath
    key: FilePath


GENERATED_TOKEN = "api-token"  # noqa: S105 (a file name, not a token)


class DaemonConfig(Model):
    """`[daemon]`: where the daemon listens, keeps state and logs."""

    control_socket: FilePath | None = None  # default: see `socket_path`
    http: Annotated[str, AfterValidator(host_port)] | None = "127.0.0.1:9310"
    api_token_file: FilePath | None = None
    api_read_token_file: FilePath | None = None  # status, events, API description only
    # Without api_token_file: the token is STATE_DIR/api-token, made at first start.
    generate_api_token: bool = False
    tls: TlsConfig | None = None
    state_dir: FilePath | None = None  # default: see `state_path`
    log_dir: FilePath | None = None  # default: see `log_path`
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    shutdown_timeout: Timeout = 60.0
    limits: ApiLimitsConfig = ApiLimitsConfig()

    @model_validator(mode="after")
    def _tls_needs_tcp(self) -> Self:
        if self.tls is not None and self.http is None:
            raise ValueError("tls is set but http is not: TLS is for the TCP listener")
        return self

    @property
    def socket_path(self) -> Path:
        """`control_socket`, or the default: /run/supervisor-daemon/control.sock for root,
        else under $XDG_RUNTIME_DIR (or /tmp/supervisor-daemon-UID) for everyone else."""
        return self.control_socket or default_socket_path()

    @property
    def token_path(self) -> Path | None:
        """Where the full API token is: `api_token_file`, or with `generate_api_token` the
        `api-token` file in the state directory (made at the first start), or nowhere."""
        if self.api_token_file is None and self.generate_api_token:
            return self.state_path / GENERATED_TOKEN
        return self.api_token_file

    @property
    def state_path(self) -> Path:
        """`state_dir`, or the default: /var/lib/supervisor-daemon for root (systemd's
        StateDirectory= under systemd), else under $XDG_STATE_HOME."""
        return self.state_dir or default_state_dir()

    @property
    def log_path(self) -> Path:
        """`log_dir`, or the default: systemd's LogsDirectory= under systemd, else `logs`
        in the state directory."""
        return self.log_dir or default_log_dir(self.state_path)


DOCKER_SDK_MISSING = (
    "uses Docker, and the docker SDK is not installed: pip install 'supervisor-daemon[docker]'"
)


def docker_sdk_installed() -> bool:
    """Whether the `docker` extra is installed (looked up, not imported: it is heavy)."""
    return importlib.util.find_spec("docker") is not None


class DefaultsConfig(Model):
    restart: RestartConfig = RestartConfig()
    log: LogConfig = LogConfig()


class Config(Model):
    """The whole file."""

    daemon: DaemonConfig = DaemonConfig()
    defaults: DefaultsConfig = DefaultsConfig()
    resources: dict[Name, ResourceConfig] = {}
    environments: dict[Name, EnvironmentConfig] = {}
    groups: dict[Name, list[MemberName]] = {}
    mcp: McpConfig = McpConfig()

    def expanded(self) -> Config:
        """This config as the daemon runs it: instances as resources of their own
        (`config.instances`); groups listing resource names."""
        resources = expand_resources(self.resources)
        groups = expand_groups(self.resources, self.groups)
        return self.model_copy(update={"resources": resources, "groups": groups})

    def docker_hosts(self) -> list[str | None]:
        """The Docker engines this config uses (None: the local one), in first-use order."""
        hosts = [h for res in self.resources.values() for h in res.docker_hosts()]
        hosts += [h for env in self.environments.values() for h in env.docker_hosts()]
        return list(dict.fromkeys(hosts))

    def docker_tls(self) -> dict[str, EngineTls]:
        """Client TLS by engine host, for the engines configured with their own."""
        found: dict[str, EngineTls] = {}
        for env in self.environments.values():
            for host, tls in env.docker_tls().items():
                found.setdefault(host, tls)
        return found

    def secret_env_names(self) -> set[str]:
        """Environment variables that hold secrets (a `token_env`, a `password_env`)."""
        return secret_env_names(self)

    def restart_for(self, name: str) -> RestartConfig:
        """The effective restart settings of resource `name`."""
        return self.defaults.restart.merged(self.resources[name].restart)

    def log_for(self, name: str) -> LogConfig:
        """The effective output settings of resource `name`."""
        # Kinds that keep no output of their own (deephaven-enterprise) have no `log`.
        overrides: RotationOverrides | None = getattr(self.resources[name], "log", None)
        return self.defaults.log if overrides is None else self.defaults.log.merged(overrides)

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
            found += res.cross_problems(name, self.resources)
            if (why := res.log_target_problem(self.log_for(name).target)) is not None:
                found.append((f"resources.{name}.log.target", why))
            try:
                self.restart_for(name)
            except ValidationError as exc:
                for err in exc.errors():
                    loc = ".".join(str(p) for p in err["loc"])
                    path = f"resources.{name}.restart" + (f".{loc}" if loc else "")
                    found.append((path, err["msg"].removeprefix("Value error, ")))
        found += group_problems(self.resources, self.groups)
        found += self._enterprise_factories()
        found += self._engine_tls_conflicts()
        cycle = self._dependency_cycle()
        if cycle:
            found.append(
                (f"resources.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle))
            )
        return found + self._missing_docker_sdk()

    def _enterprise_factories(self) -> list[tuple[str, str]]:
        """Each deephaven-enterprise environment's factory must be a configured factory."""
        found = []
        for name, env in self.environments.items():
            factory = env.deephaven_enterprise.factory if env.deephaven_enterprise else None
            spec = self.resources.get(factory) if factory is not None else None
            if factory is not None and not (spec is not None and spec.makes_enterprise_workers()):
                found.append(
                    (
                        f"environments.{name}.deephaven_enterprise.factory",
                        f"{factory!r} is not a deephaven-enterprise factory resource "
                        "(one with connection_json_url)",
                    )
                )
        return found

    def _engine_tls_conflicts(self) -> list[tuple[str, str]]:
        """One engine host, one client TLS: the daemon opens one client per host, so two
        swarm endpoints naming a host with different `tls` cannot both be honoured."""
        first: dict[str, tuple[str, EngineTls | None]] = {}
        found = []
        for name, env in self.environments.items():
            if env.swarm is None:
                continue
            endpoints = [("manager", env.swarm.manager)]
            endpoints += [(f"nodes.{i}", node) for i, node in enumerate(env.swarm.nodes)]
            for where, endpoint in endpoints:
                path = f"environments.{name}.swarm.{where}"
                seen = first.setdefault(endpoint.host, (path, endpoint.tls))
                if seen[1] != endpoint.tls:
                    found.append(
                        (
                            f"{path}.tls",
                            f"engine {endpoint.host} is also named at {seen[0]} with "
                            "different tls; one engine takes one client TLS: make them equal",
                        )
                    )
        return found

    def _missing_docker_sdk(self) -> list[tuple[str, str]]:
        """Each docker-using resource and environment, when the docker SDK is not installed."""
        users = [f"resources.{n}" for n, r in self.resources.items() if r.docker_hosts()]
        users += [f"environments.{n}" for n, e in self.environments.items() if e.docker_hosts()]
        if not users or docker_sdk_installed():
            return []
        return [(path, DOCKER_SDK_MISSING) for path in users]

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
