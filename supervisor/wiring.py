"""How a config becomes supervisors, and how they are stopped: the wiring that the
composition root (`daemon`) and the tests share."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from supervisor.config.schema import Config
from supervisor.errors import ConfigError, ConfigProblem
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.process import ProcessResource
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


def make_supervisor(
    name: str,
    config: Config,
    launcher: LocalLauncher,
    bus: EventBus,
    existing: Mapping[str, ResourceSupervisor],
    *,
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
) -> ResourceSupervisor:
    """A supervisor for resource `name`, wired to its dependencies among `existing`."""
    spec = config.resources[name]
    return ResourceSupervisor(
        name,
        ProcessResource(name, spec, launcher),
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
    rng: random.Random | None = None,
    on_check: Callable[[str, float], None] | None = None,
) -> dict[str, ResourceSupervisor]:
    """One supervisor per resource, in start order, wired to its dependencies."""
    supervisors: dict[str, ResourceSupervisor] = {}
    for name in config.start_order():
        supervisors[name] = make_supervisor(
            name, config, launcher, bus, supervisors, rng=rng, on_check=on_check
        )
    return supervisors


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
