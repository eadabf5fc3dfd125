"""Handing an environment's sandboxes out: `acquire`, its fast path, the wait, refusals.

Why it is built this way (rule numbers are the semantics page's):
- An idle READY sandbox is handed out at once, outage or not. Otherwise the caller
  queues in the pool (FIFO) and the environment grows the pool for the queue; a sandbox
  grown for a waiter is reserved for it, and the first READY one goes to the head of the
  queue: woken by an event, never by a poll (rule 15).
- Past `outage_grace` acquires fail fast, except for one trial bring-up per
  `outage_retry_interval` (rule 17). Nobody served within the timeout is an overload
  (rule 16); both refusals are published (`AcquireRejected`) for the metrics.
- With `max_size` 0 every acquire starts a fresh, tracked, one-session sandbox (rule 14).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

from supervisor.errors import (
    EnvironmentOfflineError,
    EnvironmentOutageError,
    PoolOverloadedError,
)
from supervisor.sandbox.event_types import AcquireRejected
from supervisor.sandbox.pool import Pool, Waiter
from supervisor.sandbox.status import EnvironmentStatus

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.sandbox.outage import Outage
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.supervision.bus import EventBus

E = EnvironmentStatus


class Admitting(Protocol):
    """The environment, as admission sees it (`environment.Environment`)."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> EnvironmentStatus: ...
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
    def bus(self) -> EventBus: ...
    def dispatch(self) -> None:
        """Serve the queue from idle sandboxes, then grow the pool for who is left."""

    async def one_off(self, waiter: Waiter) -> Sandbox:
        """Bring up a one-session sandbox for `waiter` (`max_size` 0)."""


async def acquire(env: Admitting, *, timeout: float | None = None) -> Sandbox:
    """`Environment.acquire`: an idle sandbox, a new one if below max, or the next freed."""
    pool = env.pool
    if env.status is E.ONLINE and not pool.queued and (idle := pool.first_idle()) is not None:
        return await _hand_out(idle)  # a READY sandbox serves, outage or not
    refuse_unavailable(env)
    waiter = Waiter()
    if pool.max_size == 0:
        return await env.one_off(waiter)
    if not pool.queued and (idle := pool.first_idle()) is not None:
        return await _hand_out(idle)
    pool.enqueue(waiter)
    env.dispatch()
    limit = env.settings.acquire_timeout if timeout is None else timeout
    try:
        with trio.move_on_after(limit):
            await waiter.event.wait()
    except BaseException:
        if waiter.sandbox is not None:
            waiter.sandbox.release_unused()
        raise
    finally:
        if not waiter.done:
            waiter.give_up()
            pool.withdraw(waiter)
    if waiter.error is not None:
        raise waiter.error
    if waiter.sandbox is None:
        refuse_unavailable(env)  # it went offline, or into an outage, meanwhile
        env.bus.publish(AcquireRejected.of(env, "overload"))
        raise PoolOverloadedError(
            f"environment {env.name}: all {pool.max_size} sandboxes stayed busy for {limit:g}s",
            retry_after=max(1.0, min(limit, 5.0)),
        )
    return waiter.sandbox


def refuse_unavailable(env: Admitting) -> None:
    """Raise unless the environment can take an acquire now.

    Raises:
        EnvironmentOfflineError: it is not ONLINE.
        EnvironmentOutageError: it is in an outage and no trial bring-up is due.
    """
    if env.status is not E.ONLINE:
        raise EnvironmentOfflineError(f"environment {env.name} is {env.status}")
    if env.in_outage and not env.outage.take_trial(env.settings.outage_retry_interval):
        env.bus.publish(AcquireRejected.of(env, "outage"))
        raise EnvironmentOutageError(
            f"environment {env.name} has failed to bring up sandboxes for "
            f"{env.outage.duration:.0f}s: {env.error}",
            retry_after=env.settings.outage_retry_interval,
        )


async def _hand_out(sandbox: Sandbox) -> Sandbox:
    sandbox.acquire()
    try:
        # A checkpoint even when nothing blocks: a caller looping over sessions must
        # still let the lease watchers and housekeeping run (found by bench/).
        await trio.lowlevel.checkpoint()
    except BaseException:
        sandbox.release_unused()
        raise
    return sandbox
