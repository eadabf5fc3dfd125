"""Every kind, in one table each: resources, sandbox backends and features.

A kind is three things: its config model (in `supervisor.config`, whose tagged unions are
the config side of these tables; a test checks that both sides name the same kinds), a
builder here, and the capabilities its objects answer for themselves (a config's
`docker_hosts()`, a resource's `credentials()`, a backend's `reset()`), so that nothing
outside this module asks `isinstance` to find out what it holds. Builders import their
module when first called: a daemon loads only the kinds its config uses, and a
processes-only config never imports the Docker or Deephaven code.

Adding a kind is one new module and one line in a table below (and its config model in
the config union).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from supervisor.config.output import LogConfig, LogOverrides
from supervisor.errors import ConfigError, ConfigProblem

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.launchers.docker import DockerEngine
    from supervisor.launchers.local import LocalLauncher
    from supervisor.observability.output import OutputLog
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.instance import Backend
    from supervisor.supervision.resource import Resource


DEFAULT_LOG = LogConfig()


class Engines(Protocol):
    """The Docker engines the daemon opened, by host (None: the local one)."""

    def get(self, host: str | None) -> DockerEngine | None: ...


@dataclass(frozen=True, slots=True)
class Context:
    """What a builder may use: the launcher, the engines, where state lives, and the
    resources built so far (an Enterprise session finds its factory there)."""

    launcher: LocalLauncher
    engines: Engines | None = None
    state_path: Path = Path()
    resources: Mapping[str, Resource] | None = None
    log_path: Path | None = None  # where programs' output files go (None: memory only)
    log_defaults: LogConfig = DEFAULT_LOG
    # The configured resources' settings (an Enterprise environment logs in with its
    # factory's), and the daemon's instance id (what names its leftovers).
    resource_configs: Mapping[str, Any] | None = None
    instance: str = ""

    def output_log(self, name: str, overrides: LogOverrides) -> OutputLog:
        """Where resource `name`'s program output is kept."""
        from supervisor.observability.output import OutputLog

        settings = self.log_defaults.merged(overrides)
        if self.log_path is None:
            settings = settings.model_copy(update={"target": "memory"})
        return OutputLog(name, self.log_path or Path(), settings)

    def engine(self, host: str | None, where: str) -> DockerEngine:
        """The open engine for `host`.

        Raises:
            ConfigError: it was not opened (a bug in who opens engines for a config).
        """
        engine = self.engines.get(host) if self.engines is not None else None
        if engine is None:
            problem = ConfigProblem(
                where, f"no Docker engine is open for {host or 'the local socket'}"
            )
            raise ConfigError("config", [problem])
        return engine


# -------------------------------------------------------------------------- resources

ResourceBuilder = Callable[[str, Any, Context], "Resource"]


def _process(name: str, spec: Any, ctx: Context) -> Resource:
    from supervisor.resources.process import ProcessResource

    return ProcessResource(name, spec, ctx.launcher, ctx.output_log(name, spec.log))


def _container(name: str, spec: Any, ctx: Context) -> Resource:
    from supervisor.resources.container import ContainerResource

    engine = ctx.engine(spec.docker_host, f"resources.{name}")
    return ContainerResource(name, spec, engine, ctx.log_defaults.merged(spec.log))


def _deephaven(name: str, spec: Any, ctx: Context) -> Resource:
    from supervisor.resources.deephaven import DeephavenResource

    docker = ctx.engine(None, f"resources.{name}") if spec.launch == "docker" else None
    # A local server's output passes through the daemon's files; a container's stays with
    # its engine and is redacted as it is read back (README, Program output).
    output = ctx.output_log(name, spec.log) if spec.launch == "python" else None
    return DeephavenResource(name, spec, ctx.launcher, docker=docker, output=output)


def _deephaven_enterprise(name: str, spec: Any, ctx: Context) -> Resource:
    from supervisor.resources.deephaven_enterprise import (
        EnterpriseFactoryResource,
        EnterpriseSessionResource,
    )

    if spec.is_factory:
        return EnterpriseFactoryResource(name, spec, ctx.launcher)
    assert ctx.resources is not None  # start order: factories are built first
    factory = ctx.resources[spec.factory]
    assert isinstance(factory, EnterpriseFactoryResource)  # checked by the config
    return EnterpriseSessionResource(name, spec, factory, ctx.launcher)


RESOURCES: Mapping[str, ResourceBuilder] = {
    "process": _process,
    "container": _container,
    "deephaven": _deephaven,
    "deephaven-enterprise": _deephaven_enterprise,
}


# --------------------------------------------------------------------------- backends

BackendBuilder = Callable[[str, "EnvironmentConfig", Context], "tuple[Backend, list[Feature]]"]
"""A backend, and the features it needs after the configured ones."""


def _process_backend(
    env: str, config: EnvironmentConfig, ctx: Context
) -> tuple[Backend, list[Feature]]:
    from supervisor.launchers.isolation.roots import sandboxes_root
    from supervisor.sandbox.backends.process import IsolationSpec, ProcessBackend, SessionReset

    sandboxes = ctx.state_path / "sandboxes" / env
    isolation = None
    if config.isolation == "bubblewrap":
        sandboxes = sandboxes_root(ctx.state_path) / env
        isolation = IsolationSpec(
            network=config.network == "host",
            uids=config.uids,
            cgroup=config.cgroup,
            hide=(ctx.state_path,),
        )
    backend = ProcessBackend(
        ctx.launcher,
        sandboxes,
        config.limits,
        config.output_limit,
        isolation=isolation,
        environment=env,
    )
    # Last: it resets the sandbox after every other feature's teardown_session.
    return backend, [SessionReset()] if isolation is not None else []


def _docker_backend(
    env: str, config: EnvironmentConfig, ctx: Context
) -> tuple[Backend, list[Feature]]:
    from supervisor.sandbox.backends import UnavailableBackend
    from supervisor.sandbox.backends.docker import DockerBackend

    assert config.docker is not None  # the schema requires the table
    engine = ctx.engines.get(config.docker.docker_host) if ctx.engines is not None else None
    if engine is None:
        return UnavailableBackend("docker", "no Docker engine is open for it"), []
    backend = DockerBackend(
        engine, config.docker, environment=env, output_limit=config.output_limit
    )
    return backend, []


def _swarm_backend(
    env: str, config: EnvironmentConfig, ctx: Context
) -> tuple[Backend, list[Feature]]:
    from supervisor.sandbox.backends import UnavailableBackend
    from supervisor.sandbox.backends.swarm import SwarmBackend

    assert config.swarm is not None  # the schema requires the table
    engines = ctx.engines
    manager = engines.get(config.swarm.manager.host) if engines is not None else None
    nodes = [engines.get(n.host) for n in config.swarm.nodes] if engines is not None else []
    if manager is None or any(n is None for n in nodes):
        return UnavailableBackend("swarm", "the swarm's engines are not open"), []
    backend = SwarmBackend(
        manager,
        [n for n in nodes if n is not None],
        config.swarm,
        environment=env,
        output_limit=config.output_limit,
    )
    return backend, []


def _deephaven_backend(
    env: str, config: EnvironmentConfig, ctx: Context
) -> tuple[Backend, list[Feature]]:
    from supervisor.config.environment import DeephavenSandboxConfig
    from supervisor.sandbox.backends.deephaven import DeephavenBackend, ScopeResetFeature

    spec = config.deephaven or DeephavenSandboxConfig()
    docker = ctx.engines.get(None) if ctx.engines is not None and spec.launch == "docker" else None
    backend = DeephavenBackend(
        ctx.launcher,
        spec,
        environment=env,
        docker=docker,
        start_timeout=spec.start_timeout,
        output_limit=config.output_limit,
    )
    # Last: it marks the scope's baseline after every other setup and wipes the scope
    # after every other teardown_session, so each session starts clean.
    return backend, [ScopeResetFeature()]


def _deephaven_enterprise_backend(
    env: str, config: EnvironmentConfig, ctx: Context
) -> tuple[Backend, list[Feature]]:
    from supervisor.sandbox.backends.deephaven_enterprise import DeephavenEnterpriseBackend

    spec = config.deephaven_enterprise
    assert spec is not None  # the schema requires the table
    factory = (ctx.resource_configs or {}).get(spec.factory)
    backend = DeephavenEnterpriseBackend(
        ctx.launcher,
        spec,
        factory if factory is not None and factory.makes_enterprise_workers() else None,
        environment=env,
        instance=ctx.instance,
        output_limit=config.output_limit,
    )
    return backend, []


BACKENDS: Mapping[str, BackendBuilder] = {
    "process": _process_backend,
    "docker": _docker_backend,
    "deephaven": _deephaven_backend,
    "swarm": _swarm_backend,
    "deephaven-enterprise": _deephaven_enterprise_backend,
}


# --------------------------------------------------------------------------- features

FeatureBuilder = Callable[[str, Any, "EnvironmentConfig", str, Context], "Feature"]
"""(feature name, its config, the environment's config, the environment's name, context)."""


def _command(name: str, spec: Any, env: EnvironmentConfig, env_name: str, ctx: Context) -> Feature:
    from supervisor.sandbox.features import CommandFeature

    host_dir = ctx.state_path / "environments" / env_name
    return CommandFeature(name, spec, ctx.launcher, host_dir, env.output_limit)


def _files(name: str, spec: Any, env: EnvironmentConfig, env_name: str, ctx: Context) -> Feature:
    from supervisor.sandbox.features import FilesFeature

    return FilesFeature(name, spec)


def _deephaven_script(
    name: str, spec: Any, env: EnvironmentConfig, env_name: str, ctx: Context
) -> Feature:
    from supervisor.sandbox.features import DeephavenScriptFeature

    return DeephavenScriptFeature(name, spec)


def _plugin(name: str, spec: Any, env: EnvironmentConfig, env_name: str, ctx: Context) -> Feature:
    from supervisor.sandbox.features import load_plugin

    return load_plugin(name, spec)


FEATURES: Mapping[str, FeatureBuilder] = {
    "command": _command,
    "files": _files,
    "deephaven_script": _deephaven_script,
    "plugin": _plugin,
}
