"""Applying a reloaded config: the reload's `Target`, over what the daemon runs.

Order matters: the Docker engines a new config names are opened before anything is
stopped (a bad host fails the reload, not half of it); secrets the new config names are
withheld from children before any of them starts; resources change before environments.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from supervisor.config.diff import ReloadPlan
from supervisor.config.schema import Config
from supervisor.launchers.local import LocalLauncher
from supervisor.observability.metrics import Metrics
from supervisor.runtime.kinds import Context
from supervisor.runtime.resources import ResourceSet
from supervisor.sandbox.service import SandboxService


class ConfigApplier:
    """Changes the resources and environments to match a new config."""

    def __init__(
        self,
        resources: ResourceSet,
        sandboxes: SandboxService,
        *,
        launcher: LocalLauncher,
        metrics: Metrics,
        open_engines: Callable[[Config], Awaitable[None]],
        context: Callable[[], Context],
    ) -> None:
        self._resources = resources
        self._sandboxes = sandboxes
        self._launcher = launcher
        self._metrics = metrics
        self._open_engines = open_engines
        self._context = context

    def check(self, new: Config, plan: ReloadPlan) -> None:
        """Build (and drop) what the plan would create: a plugin that cannot load is a
        refused reload, not a broken environment."""
        self._sandboxes.check(new.environments, plan.environments)

    async def apply(self, old: Config, new: Config, plan: ReloadPlan) -> None:
        await self._open_engines(new)
        self._launcher.withhold(old.secret_env_names() | new.secret_env_names())
        removed = await self._resources.apply(new, plan, self._context())
        for name, kind in removed:
            self._metrics.forget(name, kind)
        for name in plan.environments.removed:
            self._metrics.forget_environment(name)
        await self._sandboxes.apply(new.environments, plan.environments, new.defaults.restart)
