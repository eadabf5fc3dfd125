"""How a config becomes supervisors, and how they are stopped: the wiring that the
composition root (`daemon`) and the tests share."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import trio

from supervisor.config.environment import DeephavenSandboxConfig, EnvironmentConfig
from supervisor.config.schema import (
    Config,
    ContainerConfig,
    DeephavenConfig,
    DeephavenEnterpriseConfig,
    ProcessConfig,
    ResourceConfig,
)
from supervisor.errors import ConfigError, ConfigProblem
from supervisor.launchers.docker import DockerEngine, OwnedContainer
from supervisor.launchers.local import LocalLauncher
from supervisor.observability.metrics import Metrics
from supervisor.resources.container import ContainerResource
from supervisor.resources.deephaven import DeephavenResource
from supervisor.resources.deephaven_enterprise import (
    EnterpriseFactoryResource,
    EnterpriseSessionResource,
)
from supervisor.resources.process import ProcessResource
from supervisor.sandbox.backends import Backend, UnavailableBackend
from supervisor.sandbox.backends.deephaven import DeephavenBackend, ScopeResetFeature
from supervisor.sandbox.backends.docker import DockerBackend
from supervisor.sandbox.backends.process import ProcessBackend
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.features import build_features
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Settings
from supervisor.supervision.supervisor import ResourceSupervisor


def settings_for(config: Config, name: str) -> Settings:
    """The supervisor settings of resource `name` (what can change in place)."""
    spec = config.resources[name]
    return Settings(
        restart=config.restart_for(name),
        start_timeout=spec.start_timeout,
        stop_timeout=spec.stop_timeout,
        autostart=spec.autostart,
    )


AnyResource = (
    ProcessResource
    | ContainerResource
    | DeephavenResource
    | EnterpriseFactoryResource
    | EnterpriseSessionResource
)


def make_resource(
    name: str,
    spec: ResourceConfig,
    launcher: LocalLauncher,
    engines: Engines | None = None,
    existing: Mapping[str, ResourceSupervisor] | None = None,
) -> AnyResource:
    """The resource object for `spec`'s kind (`existing`: the supervisors built so far,
    where an Enterprise session finds its factory).

    Raises:
        ConfigError: it needs a Docker engine that was not opened.
    """
    if isinstance(spec, DeephavenEnterpriseConfig):
        if spec.is_factory:
            return EnterpriseFactoryResource(name, spec, launcher)
        assert spec.factory is not None
        assert existing is not None
        factory = existing[spec.factory].resource  # start order: factories come first
        assert isinstance(factory, EnterpriseFactoryResource)
        return EnterpriseSessionResource(name, spec, factory, launcher)
    if isinstance(spec, ProcessConfig):
        return ProcessResource(name, spec, launcher)
    if isinstance(spec, ContainerConfig):
        return ContainerResource(name, spec, _engine(engines, spec.docker_host, name))
    docker = _engine(engines, None, name) if spec.launch == "docker" else None
    return DeephavenResource(name, spec, launcher, docker=docker)


def _engine(engines: Engines | None, host: str | None, name: str) -> DockerEngine:
    engine = engines.get(host) if engines is not None else None
    if engine is None:
        raise ConfigError(
            "config",
            [
                ConfigProblem(
                    f"resources.{name}",
                    f"no Docker engine is open for {host or 'the local socket'}",
                )
            ],
        )
    return engine


def reconfigure(resource: object, spec: ResourceConfig) -> None:
    """Apply the in-place part of a changed config to a running resource of the same kind."""
    if isinstance(resource, ProcessResource):
        assert isinstance(spec, ProcessConfig)  # a change of kind is a restart, not this
        resource.reconfigure(spec)
    elif isinstance(resource, ContainerResource):
        assert isinstance(spec, ContainerConfig)
        resource.reconfigure(spec)
    elif isinstance(resource, DeephavenResource):
        assert isinstance(spec, DeephavenConfig)
        resource.reconfigure(spec)
    elif isinstance(resource, EnterpriseFactoryResource | EnterpriseSessionResource):
        assert isinstance(spec, DeephavenEnterpriseConfig)
        resource.reconfigure(spec)


def adoptable(config: Config) -> Callable[[OwnedContainer], bool]:
    """Which leftover containers to spare at start-up: `adopt = true` resources' (by name:
    one engine can be reached under several host strings)."""
    names = {
        name
        for name, spec in config.resources.items()
        if isinstance(spec, ContainerConfig) and spec.adopt
    }
    return lambda container: container.resource in names


class Engines(Protocol):
    def get(self, host: str | None) -> DockerEngine | None: ...


def make_supervisor(
    name: str,
    config: Config,
    launcher: LocalLauncher,
    bus: EventBus,
    existing: Mapping[str, ResourceSupervisor],
    *,
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
    engines: Engines | None = None,
) -> ResourceSupervisor:
    """A supervisor for resource `name`, wired to its dependencies among `existing`."""
    spec = config.resources[name]
    return ResourceSupervisor(
        name,
        make_resource(name, spec, launcher, engines, existing),
        settings_for(config, name),
        bus=bus,
        depends_on=[existing[d] for d in spec.depends_on],
        rng=rng,
        on_check=on_check,
    )


def build_supervisors(
    config: Config,
    launcher: LocalLauncher,
    bus: EventBus,
    *,
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
    engines: Engines | None = None,
) -> dict[str, ResourceSupervisor]:
    """One supervisor per resource, in start order, wired to its dependencies."""
    supervisors: dict[str, ResourceSupervisor] = {}
    for name in config.start_order():
        supervisors[name] = make_supervisor(
            name, config, launcher, bus, supervisors, rng=rng, on_check=on_check, engines=engines
        )
    return supervisors


def make_environment(
    name: str,
    config: EnvironmentConfig,
    *,
    launcher: LocalLauncher,
    state_path: Path,
    bus: EventBus,
    metrics: Metrics | None,
    engines: Engines | None = None,
) -> Environment:
    """An environment with its backend and features, publishing on `bus` (where the
    daemon's metrics and logs listen: `metrics` is no longer wired here)."""
    features = build_features(config, launcher, state_path / "environments" / name)
    backend: Backend
    if config.backend == "process":
        backend = ProcessBackend(
            launcher, state_path / "sandboxes" / name, config.limits, config.output_limit
        )
    elif config.backend == "docker":
        assert config.docker is not None  # the schema requires the table
        engine = engines.get(config.docker.docker_host) if engines is not None else None
        if engine is None:
            backend = UnavailableBackend("docker", "no Docker engine is open for it")
        else:
            backend = DockerBackend(
                engine, config.docker, environment=name, output_limit=config.output_limit
            )
    else:
        spec = config.deephaven or DeephavenSandboxConfig()
        docker = engines.get(None) if engines is not None and spec.launch == "docker" else None
        backend = DeephavenBackend(
            launcher,
            spec,
            environment=name,
            docker=docker,
            start_timeout=spec.start_timeout,
        )
        # Last: it marks the scope's baseline after every other setup and wipes the
        # scope after every other teardown_session, so each session starts clean.
        features.append(ScopeResetFeature())
    return Environment(name, config, backend, features, bus=bus)


def read_token(path: Path | None) -> bytes | None:
    """The API bearer token from `api_token_file` (surrounding whitespace ignored).

    Raises:
        ConfigError: the file is unreadable or empty.
    """
    if path is None:
        return None
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            str(path), [ConfigProblem("daemon.api_token_file", f"cannot read: {exc.strerror}")]
        ) from None
    if not token:
        raise ConfigError(
            str(path), [ConfigProblem("daemon.api_token_file", "the token file is empty")]
        )
    return token


async def stop_in_order(supervisors: Mapping[str, ResourceSupervisor]) -> None:
    """Stop every resource after all of its dependents are down, concurrently otherwise."""
    done = {name: trio.Event() for name in supervisors}
    dependents: dict[str, list[str]] = {name: [] for name in supervisors}
    for name, sup in supervisors.items():
        for dep in sup.depends_on:
            dependents[dep.name].append(name)

    async def stop_one(name: str) -> None:
        for dependent in dependents[name]:
            await done[dependent].wait()
        await supervisors[name].stop_and_wait()
        done[name].set()

    async with trio.open_nursery() as nursery:
        for name in supervisors:
            nursery.start_soon(stop_one, name)
