"""Keeping an environment's pool healthy: the maintenance loop, recycling, shrinking.

Why it is built this way (rule numbers are the semantics page's):
- Maintenance (replacing dead sandboxes, topping up to `min_ready`) runs as soon as a
  sandbox goes OFFLINE, not at the next housekeeping tick: the loop sleeps on a wake
  event the environment sets. The periodic run adds recycling, shrinking and
  environment-feature housekeeping, and reports all of it as one event (rule 18).
- During an outage the loop also wakes when a paced bring-up retry is due, and fails the
  queued waiters fast rather than letting them time out (rule 17).
- Retiring takes an idle sandbox out of the pool's idle set synchronously, so no acquire
  can take it while it shuts down in the background.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import structlog
import trio

from supervisor.errors import EnvironmentOutageError
from supervisor.sandbox.event_types import EnvironmentHousekept

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.outage import Outage
    from supervisor.sandbox.pool import Pool
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.supervision.bus import EventBus

log = structlog.get_logger("supervisor.environment")


class Maintained(Protocol):
    """The environment, as its maintenance sees it (`environment.Environment`)."""

    @property
    def name(self) -> str: ...
    @property
    def error(self) -> BaseException | None: ...
    @property
    def settings(self) -> EnvironmentConfig: ...
    @property
    def pool(self) -> Pool: ...
    @property
    def outage(self) -> Outage: ...
    @property
    def in_outage(self) -> bool: ...
    @property
    def env_features(self) -> Sequence[Feature]: ...
    @property
    def bus(self) -> EventBus: ...
    def top_up(self) -> None:
        """Grow the pool back to `min_ready` (and retry now and then during an outage)."""

    def dispatch(self) -> None:
        """Serve the queue from idle sandboxes, then grow the pool for who is left."""

    def retire(self, sandbox: Sandbox) -> None:
        """Shut an idle sandbox down in the background (the pool already let it go)."""

    async def housekeep_feature(self, feature: Feature, counter: int) -> None:
        """An environment-scoped feature's `housekeep`, published; errors propagate."""


class Maintenance:
    """The maintenance loop of one environment."""

    def __init__(self, env: Maintained) -> None:
        self._env = env
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        self._last_feature_run: dict[str, float] = {}
        self.counter = 0  # periodic runs so far

    def wake(self) -> None:
        """Something changed (a sandbox went OFFLINE, a resize): look at the pool now."""
        self._wake.set()

    def stop(self) -> None:
        """End the loop at once (not at its next tick)."""
        self._scope.cancel()

    async def run(self) -> None:
        """Top up and serve waiters on every wake; the periodic run every
        `housekeep_interval`; until `stop()`."""
        env, pool = self._env, self._env.pool
        next_tick = trio.current_time() + env.settings.housekeep_interval
        with self._scope:
            while True:
                wake_at = next_tick
                retry_at = env.outage.next_try
                if retry_at > trio.current_time() and (pool.queued or pool.below_min_ready):
                    wake_at = min(wake_at, retry_at)  # a paced bring-up retry is due then
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
                self._wake = trio.Event()
                if env.in_outage:
                    pool.fail_waiters(
                        EnvironmentOutageError(
                            f"environment {env.name} is in an outage: {env.error}",
                            retry_after=env.settings.outage_retry_interval,
                        )
                    )
                env.top_up()
                env.dispatch()
                if trio.current_time() >= next_tick:
                    await self._housekeep()
                    next_tick = trio.current_time() + env.settings.housekeep_interval

    async def _housekeep(self) -> None:
        """The periodic run: recycle, shrink, environment features, one event (rule 18)."""
        env, pool = self._env, self._env.pool
        self.counter += 1
        started = now = trio.current_time()
        tally = pool.take_tally()
        counts = {"dead": tally["dead"], "replaced": tally["replaced"], "recycled": 0}
        counts |= {"shrunk": 0, "expired": tally["expired"]}
        limit = env.settings.max_sessions_per_sandbox
        for sandbox in pool.idle():
            if now >= sandbox.recycle_at or (
                limit is not None and sandbox.sessions_served >= limit
            ):
                counts["recycled"] += 1
                env.retire(pool.take_out(sandbox))
        idle_timeout = env.settings.idle_timeout
        if idle_timeout is not None:
            excess = pool.live - pool.min_ready
            for sandbox in sorted(pool.idle(), key=lambda s: s.status_since):
                if excess <= 0 or now - sandbox.status_since < idle_timeout:
                    break
                counts["shrunk"] += 1
                excess -= 1
                env.retire(pool.take_out(sandbox))
        error = await self._housekeep_features(now)
        env.top_up()
        duration = trio.current_time() - started
        env.bus.publish(
            EnvironmentHousekept.of(
                env, counter=self.counter, duration=duration, error=error, counts=counts
            )
        )

    async def _housekeep_features(self, now: float) -> BaseException | None:
        """Each environment feature's `housekeep`, on its own interval; the first error."""
        env = self._env
        error: BaseException | None = None
        for feature in env.env_features:
            interval = feature.housekeep_interval or env.settings.housekeep_interval
            if now - self._last_feature_run.get(feature.name, -math.inf) < interval:
                continue
            self._last_feature_run[feature.name] = now
            try:
                await env.housekeep_feature(feature, self.counter)
            except Exception as exc:
                error = error or exc
                log.warning("feature_housekeep_failed", environment=env.name, feature=feature.name)
        return error
