"""A config becomes objects: resources under their supervisors, environments with their
backend and features. Kinds come from `runtime.kinds`; this module only assembles."""

from __future__ import annotations

import dataclasses
import os
import random
import secrets
import ssl
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import trio

from supervisor.api.access import Tokens
from supervisor.config.environment import EnvironmentConfig
from supervisor.config.schema import Config, DaemonConfig
from supervisor.config.tls import TlsProblem, server_context
from supervisor.errors import ConfigError, ConfigProblem
from supervisor.runtime.kinds import BACKENDS, FEATURES, RESOURCES, Context
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.features import Feature
from supervisor.supervision.bus import EventBus
from supervisor.supervision.resource import Resource
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


def make_resource(
    name: str, config: Config, ctx: Context, built: Mapping[str, ResourceSupervisor]
) -> Resource:
    """The resource object for `name` (`built`: the supervisors made so far)."""
    spec = config.resources[name]
    ctx = dataclasses.replace(ctx, resources=_ResourcesOf(built))
    return RESOURCES[spec.kind](name, spec, ctx)


class _ResourcesOf(Mapping[str, Resource]):
    """The resources of `supervisors`, as a view (a copy per build is quadratic)."""

    def __init__(self, supervisors: Mapping[str, ResourceSupervisor]) -> None:
        self._supervisors = supervisors

    def __getitem__(self, name: str) -> Resource:
        return self._supervisors[name].resource

    def __iter__(self) -> Iterator[str]:
        return iter(self._supervisors)

    def __len__(self) -> int:
        return len(self._supervisors)


def make_supervisor(
    name: str,
    config: Config,
    ctx: Context,
    bus: EventBus,
    built: Mapping[str, ResourceSupervisor],
    *,
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
) -> ResourceSupervisor:
    """A supervisor for resource `name`, wired to its dependencies among `built`."""
    return ResourceSupervisor(
        name,
        make_resource(name, config, ctx, built),
        settings_for(config, name),
        bus=bus,
        depends_on=[built[d] for d in config.resources[name].depends_on],
        rng=rng,
        on_check=on_check,
    )


def build_supervisors(
    config: Config,
    ctx: Context,
    bus: EventBus,
    *,
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
) -> dict[str, ResourceSupervisor]:
    """One supervisor per resource, in start order, wired to its dependencies."""
    supervisors: dict[str, ResourceSupervisor] = {}
    for name in config.start_order():
        supervisors[name] = make_supervisor(
            name, config, ctx, bus, supervisors, rng=rng, on_check=on_check
        )
    return supervisors


def make_environment(
    name: str, config: EnvironmentConfig, ctx: Context, bus: EventBus
) -> Environment:
    """An environment with its backend and features, publishing on `bus`.

    Raises:
        Exception: a feature plugin that cannot be loaded (the caller reports it).
    """
    features: list[Feature] = [
        FEATURES[spec.kind](feature_name, spec, config, name, ctx)
        for feature_name, spec in zip(config.feature_names(), config.features, strict=True)
    ]
    backend, extra = BACKENDS[config.backend](name, config, ctx)
    return Environment(name, config, backend, [*features, *extra], bus=bus)


def read_token(path: Path | None, key: str = "api_token_file") -> bytes | None:
    """An API bearer token from its file (surrounding whitespace ignored).

    Raises:
        ConfigError: the file is unreadable or empty (`daemon.KEY`).
    """
    if path is None:
        return None
    try:
        token = path.read_bytes().strip()
    except OSError as exc:
        raise ConfigError(
            str(path), [ConfigProblem(f"daemon.{key}", f"cannot read: {exc.strerror}")]
        ) from None
    if not token:
        raise ConfigError(str(path), [ConfigProblem(f"daemon.{key}", "the token file is empty")])
    return token


def generate_token(config: DaemonConfig) -> Path | None:
    """With `generate_api_token` and no `api_token_file`: make the state directory's token
    file (0600) if it is not there yet; its path, or None if no token is generated."""
    if config.api_token_file is not None or not config.generate_api_token:
        return None
    path = config.token_path
    assert path is not None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return path
    except OSError as exc:
        raise ConfigError(
            str(path),
            [ConfigProblem("daemon.generate_api_token", f"cannot create: {exc.strerror}")],
        ) from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return path


def read_tokens(config: DaemonConfig) -> Tokens:
    """The TCP listener's full and read-only tokens (ConfigError if a file is unusable)."""
    return Tokens(
        full=read_token(config.token_path),
        read=read_token(config.api_read_token_file, "api_read_token_file"),
    )


def tls_context(config: DaemonConfig) -> ssl.SSLContext | None:
    """The TCP listener's TLS context, or None (ConfigError if the pair does not load)."""
    if config.tls is None:
        return None
    try:
        return server_context(config.tls.cert, config.tls.key)
    except TlsProblem as exc:
        raise ConfigError(
            str(config.tls.cert), [ConfigProblem(f"daemon.tls.{exc.key}", str(exc))]
        ) from None


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
