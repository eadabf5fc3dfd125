"""Keeping an environment's pool healthy: the maintenance loop, recycling, shrinking, resize.

Why it is built this way (rule numbers are the semantics page's):
- Maintenance (replacing dead sandboxes, topping up to `min_ready`) runs as soon as a
  sandbox goes OFFLINE, not at the next housekeeping tick: the loop sleeps on the
  environment's wake event. The periodic run adds recycling, shrinking and
  environment-feature housekeeping, and reports all of it as one event (rule 18).
- During an outage the loop also wakes when a paced bring-up retry is due, and fails the
  queued waiters fast rather than letting them time out (rule 17).
- Retiring takes an idle sandbox out of the READY set synchronously, so no acquire can
  take it while it shuts down in the background.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import structlog
import trio

from supervisor.errors import EnvironmentOutageError
from supervisor.sandbox.hooks import run_env_hook
from supervisor.sandbox.status import SandboxStatus

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.sandbox.environment import Environment
    from supervisor.sandbox.sandbox import Sandbox

S = SandboxStatus
log = structlog.get_logger("supervisor.environment")


async def housekeeping_loop(env: Environment) -> None:
    """Top up and serve waiters on every wake; the periodic run every `housekeep_interval`."""
    interval = env.settings.housekeep_interval
    next_tick = trio.current_time() + interval
    last_feature_run: dict[str, float] = {}
    with trio.CancelScope() as env._housekeeper:
        while True:
            wake_at = next_tick
            retry_at = env._next_bring_up
            if retry_at > trio.current_time() and (
                env._waiters or env._live < env.settings.min_ready
            ):
                wake_at = min(wake_at, retry_at)  # a paced bring-up retry is due then
            with trio.move_on_at(wake_at):
                await env._wake.wait()
            env._wake = trio.Event()
            if env.in_outage:
                env._fail_waiters(
                    EnvironmentOutageError(
                        f"environment {env.name} is in an outage: {env.error}",
                        retry_after=env.settings.outage_retry_interval,
                    )
                )
            env._top_up()
            env._dispatch()
            if trio.current_time() >= next_tick:
                await _housekeep(env, last_feature_run)
                interval = env.settings.housekeep_interval
                next_tick = trio.current_time() + interval


async def _housekeep(env: Environment, last_feature_run: dict[str, float]) -> None:
    """The periodic run: recycle, shrink, environment features, one event (rule 18)."""
    env.housekeep_counter += 1
    started = now = trio.current_time()
    counts = dict.fromkeys(("dead", "replaced", "recycled", "shrunk", "expired"), 0)
    for key in ("dead", "replaced", "expired"):
        counts[key], env._tally[key] = env._tally[key], 0
    limit = env.settings.max_sessions_per_sandbox
    for sandbox in list(env._ready):
        if now >= sandbox.recycle_at or (limit is not None and sandbox.sessions_served >= limit):
            counts["recycled"] += 1
            retire(env, sandbox)
    idle_timeout = env.settings.idle_timeout
    if idle_timeout is not None:
        excess = env._live - env.settings.min_ready
        for sandbox in sorted(env._ready, key=lambda s: s.status_since):
            if excess <= 0 or now - sandbox.status_since < idle_timeout:
                break
            counts["shrunk"] += 1
            excess -= 1
            retire(env, sandbox)
    error: BaseException | None = None
    for feature in env.env_features:
        interval = feature.housekeep_interval or env.settings.housekeep_interval
        if now - last_feature_run.get(feature.name, -math.inf) < interval:
            continue
        last_feature_run[feature.name] = now
        try:
            await run_env_hook(env, feature, "housekeep")
        except Exception as exc:
            error = error or exc
            log.warning("feature_housekeep_failed", environment=env.name, feature=feature.name)
    env._top_up()
    env.events.on_environment_housekeep(
        env, env.housekeep_counter, trio.current_time() - started, error, counts
    )


def retire(env: Environment, sandbox: Sandbox) -> None:
    """Take an idle sandbox out of service now and shut it down in the background."""
    env._ready.pop(sandbox, None)
    env.nursery.start_soon(sandbox.shutdown_quietly)


def resize(env: Environment, settings: EnvironmentConfig) -> None:
    """`Environment.resize`: apply new pool settings in place (reload)."""
    old_max = env.settings.max_size
    env.settings = settings
    if settings.max_size != old_max:
        taken = {slot for slot, sb in env._slots.items() if sb.status is not S.OFFLINE}
        env._free.resize(settings.max_size, taken)
        for sandbox in list(env._ready):
            if sandbox.slot >= settings.max_size:
                retire(env, sandbox)
    env._wake.set()
