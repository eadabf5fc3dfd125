"""Handing an environment's sandboxes out: the waiter queue, `acquire`, fail-fast refusals.

Why it is built this way (rule numbers are the semantics page's):
- Waiters queue in arrival order and are served by handing a sandbox to the head of the
  queue the moment one turns READY: an event, not a poll. A sandbox grown for a waiter is
  reserved for it (rule 15), and if that waiter gave up meanwhile it goes to the next.
- An idle READY sandbox serves even during an outage; otherwise, past `outage_grace`,
  acquires fail fast except for one trial bring-up per `outage_retry_interval` (rule 17).
- With `max_size` 0 every acquire starts a fresh, tracked, one-session sandbox (rule 14).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from supervisor.errors import (
    EnvironmentOfflineError,
    EnvironmentOutageError,
    PoolOverloadedError,
    SandboxStateError,
)
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.status import EnvironmentStatus

if TYPE_CHECKING:
    from supervisor.sandbox.environment import Environment

E = EnvironmentStatus


@dataclass(eq=False, slots=True)
class Waiter:
    """One caller of `acquire` waiting for a sandbox (or an error)."""

    event: trio.Event = field(default_factory=trio.Event)
    sandbox: Sandbox | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.event.is_set()

    def serve(self, sandbox: Sandbox) -> None:
        sandbox.acquire()
        self.sandbox = sandbox
        self.event.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.event.set()


def offer(env: Environment, sandbox: Sandbox) -> None:
    """A sandbox turned READY: to its reserving waiter, else the oldest waiter, else idle."""
    reserved, sandbox.reserved_for = sandbox.reserved_for, None
    if isinstance(reserved, Waiter) and not reserved.done:
        reserved.serve(sandbox)
        return
    if sandbox.reusable and sandbox.slot >= env.settings.max_size:
        env.nursery.start_soon(sandbox.shutdown_quietly)  # its slot was resized away
        return
    while env._waiters:
        waiter = env._waiters.popleft()
        if not waiter.done:
            waiter.serve(sandbox)
            return
    env._ready[sandbox] = None


def _trial_due(env: Environment) -> bool:
    """In an outage, one bring-up per `outage_retry_interval` still tries (and, if it
    works, ends the outage); the rest fail fast."""
    if trio.current_time() < env._next_bring_up:
        return False
    env._next_bring_up = trio.current_time() + env.settings.outage_retry_interval
    return True


def _require_online(env: Environment) -> None:
    if env.status is not E.ONLINE:
        raise EnvironmentOfflineError(f"environment {env.name} is {env.status}")
    if env.in_outage and not _trial_due(env):
        env.events.on_acquire_rejected(env, "outage")
        raise EnvironmentOutageError(
            f"environment {env.name} has failed to bring up sandboxes for "
            f"{env.offline_duration:.0f}s: {env.error}",
            retry_after=env.settings.outage_retry_interval,
        )


async def acquire(env: Environment, *, timeout: float | None = None) -> Sandbox:
    """`Environment.acquire`: an idle sandbox, a new one if below max, or the next freed."""
    if env.status is E.ONLINE and not env._waiters and env._ready:
        return await _take_ready(env)  # a READY sandbox serves, outage or not
    _require_online(env)
    waiter = Waiter()
    if env.settings.max_size == 0:
        # Rule 14: a fresh sandbox per session, tracked so shutdown still reaches it.
        env._ephemeral_count += 1
        sandbox = Sandbox(env, env._ephemeral_count - 1, 0, reusable=False, ephemeral=True)
        sandbox.reserved_for = waiter
        env._ephemeral.add(sandbox)
        env._live += 1
        try:
            await sandbox.start()
        except SandboxStateError as exc:
            env._bring_up_failed(exc)
            raise
        except BaseException:  # cancelled: leave nothing running
            await sandbox.shutdown_quietly()
            raise
        env._offline_since = None
        assert waiter.sandbox is sandbox
        env.nursery.start_soon(sandbox.housekeep)
        return sandbox
    if not env._waiters and env._ready:
        return await _take_ready(env)
    env._waiters.append(waiter)
    env._dispatch()
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
            waiter.event.set()  # given up: a sandbox reserved for it goes to the next
            with contextlib.suppress(ValueError):
                env._waiters.remove(waiter)
    if waiter.error is not None:
        raise waiter.error
    if waiter.sandbox is None:
        if env.in_outage or env.status is not E.ONLINE:
            _require_online(env)
        env.events.on_acquire_rejected(env, "overload")
        raise PoolOverloadedError(
            f"environment {env.name}: all {env.settings.max_size} sandboxes stayed busy "
            f"for {limit:g}s",
            retry_after=max(1.0, min(limit, 5.0)),
        )
    return waiter.sandbox


async def _take_ready(env: Environment) -> Sandbox:
    sandbox = next(iter(env._ready))
    sandbox.acquire()
    try:
        # A checkpoint even when nothing blocks: a caller looping over sessions must
        # still let the lease watchers and housekeeping run (found by bench/).
        await trio.lowlevel.checkpoint()
    except BaseException:
        sandbox.release_unused()
        raise
    return sandbox
