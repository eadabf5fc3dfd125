"""Keeping one environment up: build it, start it, and try again when a start fails.

An `Environment` is one-shot (its start either brings the pool ONLINE or ends OFFLINE),
so a keeper runs a succession of them. A start that fails (an environment-scoped feature
whose setup fails, a plugin that cannot load, a backend that cannot bring up its first
sandboxes) is retried with the restart policy resources use (`policy.decide`: at once,
then backoff, FATAL past the intensity limit, retried after `fatal_retry`), and each
decision is an event (`BACKOFF`/`FATAL`, with the next delay) and shows in `stats()`.
A start that fails with `MisconfiguredError` (no bwrap on this host, say) cannot work by
retrying soon: it is MISCONFIGURED at once and tried again only after `fatal_retry`.
`restart()` rebuilds the environment now, whatever state it is in, as an operator start
does for a resource.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import structlog
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.config.types import RestartConfig
from supervisor.errors import MisconfiguredError
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.status import EnvironmentStatus
from supervisor.supervision.bus import EventBus
from supervisor.supervision.policy import RestartIntensity, decide
from supervisor.supervision.states import Transition

log = structlog.get_logger("supervisor.sandbox.keeper")

EnvironmentFactory = Callable[[str, EnvironmentConfig], Environment]


class Keeper:
    """One environment, kept up across failed starts and operator restarts."""

    def __init__(
        self,
        name: str,
        config: EnvironmentConfig,
        factory: EnvironmentFactory,
        *,
        restart: RestartConfig,
        bus: EventBus,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.env: Environment | None = None
        self.failures = 0
        self.waiting: EnvironmentStatus | None = None  # BACKOFF or FATAL between starts
        self.error = ""
        self._factory = factory
        self._restart = restart
        self._bus = bus
        self._rng = rng or random.Random()
        self._intensity = RestartIntensity(restart.intensity.max_restarts, restart.intensity.within)
        self._wake = trio.Event()
        self._retry_at: float | None = None

    # ----------------------------------------------------------------------- commands

    def restart(self) -> None:
        """Rebuild the environment now (a fresh start: the failure count is cleared)."""
        self.failures = 0
        self._intensity.reset()
        self._wake.set()

    def resize(self, config: EnvironmentConfig) -> None:
        """New sizes, timeouts and leases for the running pool (and the next ones)."""
        self.config = config
        if self.env is not None:
            self.env.resize(config)

    def set_restart(self, restart: RestartConfig) -> None:
        """New restart settings (from `[defaults.restart]` on reload)."""
        self._restart = restart
        self._intensity.max_restarts = restart.intensity.max_restarts
        self._intensity.within = restart.intensity.within

    # ------------------------------------------------------------------------ queries

    def stats(self) -> dict[str, Any]:
        """The current environment's stats, with the keeper's own state over them."""
        if self.env is not None:
            stats = self.env.stats()
        else:
            stats = {
                "name": self.name,
                "backend": self.config.backend,
                "status": EnvironmentStatus.OFFLINE.value,
                "sandboxes": {},
                "min_ready": self.config.min_ready,
                "max_size": self.config.max_size,
                "waiters": 0,
                "active_sessions": 0,
                "offline_duration": 0.0,
                "outage": False,
                "error": self.error or None,
            }
        if self.waiting is not None:
            stats["status"] = self.waiting.value
            stats["error"] = self.error
        retry_in = None
        if self._retry_at is not None:
            retry_in = round(max(0.0, self._retry_at - trio.current_time()), 3)
        return {**stats, "failures": self.failures, "retry_in": retry_in}

    # --------------------------------------------------------------------------- life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the environment up until cancelled; `started()` after the first attempt."""
        while True:
            self._wake = trio.Event()
            error = await self._run_one(task_status)
            task_status = trio.TASK_STATUS_IGNORED  # only the first attempt is awaited
            if error is None:
                continue  # restarted by the operator: build the next one at once
            await self._wait_after(error)

    async def stop(self) -> None:
        """Shut the current environment down (the daemon is stopping)."""
        if self.env is not None:
            await self.env.shutdown()

    async def _run_one(self, task_status: trio.TaskStatus[None]) -> BaseException | None:
        """Build and start one environment; serve it until a restart is asked for.

        Returns the error that ended a failed start, or None after a restart.
        """
        try:
            env = self._factory(self.name, self.config)
        except Exception as exc:  # a feature plugin that cannot be loaded, say
            log.error("environment_not_built", environment=self.name, error=str(exc))
            task_status.started()
            return exc
        self.env = env
        async with trio.open_nursery() as nursery:
            try:
                await env.start(nursery)
            except Exception as exc:
                log.error("environment_start_failed", environment=self.name, error=str(exc))
                task_status.started()
                nursery.cancel_scope.cancel()
                return exc
            self.waiting, self.error, self._retry_at = None, "", None
            self.failures = 0  # a start that works ends the run of failures
            task_status.started()
            try:
                await self._wake.wait()
            finally:
                await env.shutdown()
                nursery.cancel_scope.cancel()
        log.info("environment_restarted", environment=self.name)
        return None

    async def _wait_after(self, error: BaseException) -> None:
        """Decide what follows a failed start, say so, and wait for the next attempt."""
        now = trio.current_time()
        previous = self.waiting or EnvironmentStatus.OFFLINE
        reason = "start_failed"
        if isinstance(error, MisconfiguredError):
            self.failures += 1
            self.waiting, reason = EnvironmentStatus.MISCONFIGURED, "misconfigured"
            delay = self._restart.fatal_retry_after
        else:
            verdict = decide(
                self._restart, self._intensity, now, failures=self.failures, ran_for=None,
                success=False, rand=self._rng.random(),
            )  # fmt: skip
            self.failures = verdict.failures
            fatal = verdict.next.value == "FATAL"
            delay = self._restart.fatal_retry_after if fatal else verdict.delay
            self.waiting = EnvironmentStatus.FATAL if fatal else EnvironmentStatus.BACKOFF
        self.error = f"{type(error).__name__}: {error}"
        self._retry_at = now + delay
        self._bus.publish(
            Transition(
                "environment", self.name, self.config.backend, previous.value,
                self.waiting.value, reason, detail=self.error,
                attempt=self.failures, next_delay=delay,
            )
        )  # fmt: skip
        with trio.move_on_at(self._retry_at):
            await self._wake.wait()
        self._retry_at = None
