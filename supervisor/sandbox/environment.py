"""An environment: a pool of sandboxes handed out as sessions, kept warm and healthy.

The environment composes the parts and runs the life of the whole: the `Pool` keeps
the bookkeeping (slots, idle sandboxes, waiters, sessions, size), the `Outage` clock
paces bring-ups, `admission` hands sandboxes out, `leases` runs sessions and
`Maintenance` keeps the pool healthy. What the environment does itself: bring sandboxes
up (growing the pool for waiters, topping it up), start, shut down, resize and report.

Why it is built this way (rule numbers are the semantics page's):
- A sandbox is added to the pool (taking its slot) synchronously, in the same step that
  decides to grow, so `max_size` holds under any concurrency (rule 15).
- Bring-up failures with a state error start the offline clock and pace retries by
  `outage_retry_interval`; past `outage_grace` acquires fail fast (rule 17). A user error
  goes to the caller at once.
- Every event goes to one bus (the daemon's, or a private one): handlers passed in
  `handlers=[...]` are subscribed to it while the environment runs.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import EnvironmentOfflineError, SandboxStateError
from supervisor.sandbox import admission, leases
from supervisor.sandbox.event_types import (
    EnvironmentShutdown,
    EnvironmentShuttingDown,
    EnvironmentStarted,
    EnvironmentStarting,
    EnvironmentStatusChanged,
    FeatureHookRan,
    Hook,
)
from supervisor.sandbox.events import EventHandler, HandlerListener
from supervisor.sandbox.features import Feature
from supervisor.sandbox.instance import Backend
from supervisor.sandbox.maintenance import Maintenance
from supervisor.sandbox.outage import Outage
from supervisor.sandbox.pool import Pool, Waiter
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.session import Session
from supervisor.sandbox.status import ENVIRONMENT_TRANSITIONS, EnvironmentStatus, SandboxStatus
from supervisor.supervision.bus import EventBus

E = EnvironmentStatus
S = SandboxStatus
log = structlog.get_logger("supervisor.environment")


class Environment:
    """A named pool of sandboxes of one backend; open it with `open_environment()`."""

    def __init__(
        self,
        name: str,
        settings: EnvironmentConfig,
        backend: Backend,
        features: Sequence[Feature] = (),
        *,
        handlers: Sequence[EventHandler] = (),
        bus: EventBus | None = None,
        rng: random.Random | None = None,
        stop_grace: float = 60.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.backend = backend
        self.features = [f for f in features if f.sandbox_scoped]
        self.env_features = [f for f in features if not f.sandbox_scoped]
        # Without the daemon's bus, a private one that keeps no history: nothing replays it.
        self.bus = bus if bus is not None else EventBus(history=0)
        self.stop_grace = stop_grace
        self.status = E.CREATED
        self.error: BaseException | None = None
        self.pool = Pool(settings.min_ready, settings.max_size)
        self.outage = Outage()
        self.maintenance = Maintenance(self)
        self._handlers = list(handlers)
        self._unsubscribe: list[Callable[[], None]] = []
        self._rng = rng or random.Random()
        self._nursery: trio.Nursery | None = None
        self._created_at = trio.current_time()
        self._offline = trio.Event()
        self._env_set_up: list[Feature] = []

    def __repr__(self) -> str:
        return f"<Environment {self.name} {self.status}>"

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise EnvironmentOfflineError(f"environment {self.name} is not running")
        return self._nursery

    # -- what its parts ask of it (sandbox.Host, admission, maintenance) -------------

    def status_changed(self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus) -> None:
        """The pool takes every sandbox status change in (see `sandbox.Host`)."""
        if old is S.READY:
            self.pool.left_ready(sandbox)
        if new is S.READY:
            if not self.pool.offer(sandbox):
                self.retire(sandbox)  # its slot was resized away
        elif new is S.OFFLINE:
            self.pool.remove(sandbox)
            self.maintenance.wake()

    def reusable(self, sandbox: Sandbox) -> bool:
        """Whether `sandbox` may serve another session (rule 8: max 0, recycling, resize)."""
        limit = self.settings.max_sessions_per_sandbox
        return (
            sandbox.reusable
            and self.status is E.ONLINE
            and self.pool.fits(sandbox)
            and trio.current_time() < sandbox.recycle_at
            and (limit is None or sandbox.sessions_served < limit)
        )

    def session_over(self, session: Session) -> None:
        self.pool.session_over(session)

    def retire(self, sandbox: Sandbox) -> None:
        """Shut `sandbox` down in the background (the pool no longer hands it out)."""
        self.nursery.start_soon(sandbox.shutdown_quietly)

    # -- bringing sandboxes up ---------------------------------------------------------

    def _recycle_deadline(self) -> float:
        """When a sandbox created now is due for recycling (jittered, rule 18)."""
        age, now = self.settings.max_sandbox_age, trio.current_time()
        if age is None:
            return math.inf
        return now + age * (1.0 - self.settings.recycle_jitter * self._rng.random())

    def _new_sandbox(self, slot: int, generation: int) -> Sandbox:
        return Sandbox(self, slot, generation, reusable=True, recycle_at=self._recycle_deadline())

    def _can_grow(self) -> bool:
        return self.status is E.ONLINE and self.pool.has_room and self.outage.may_try()

    def _grow(self, waiter: Waiter | None = None) -> None:
        """Add a sandbox (taking its slot now) and bring it up in the background."""
        self.nursery.start_soon(self._bring_up, self.pool.add(self._new_sandbox, waiter), waiter)

    async def _bring_up(self, sandbox: Sandbox, waiter: Waiter | None) -> BaseException | None:
        """Start `sandbox` (for `waiter`, if any); returns a user error instead of raising."""
        try:
            await sandbox.start()
        except SandboxStateError as exc:
            if self.status in (E.SHUTTING_DOWN, E.OFFLINE):  # no retry, no outage
                if waiter is not None and not waiter.done:
                    waiter.fail(
                        EnvironmentOfflineError(f"environment {self.name} is {self.status}")
                    )
                return None
            self._bring_up_failed(exc)
            if waiter is not None and not waiter.done:
                self.pool.requeue(waiter)  # keeps its place; retried after the interval
            self.maintenance.wake()
            return None
        except Exception as exc:
            # A user error goes to the caller at once: no retry now, no outage (rule 17).
            self.outage.user_error(self.settings.outage_retry_interval)
            self.error = exc
            if waiter is not None and not waiter.done:
                waiter.fail(exc)
            else:
                log.warning("sandbox_bring_up_failed", environment=self.name, error=str(exc))
            return exc
        self.outage.recovered()
        self.error = None
        self.nursery.start_soon(sandbox.housekeep)
        return None

    def _bring_up_failed(self, error: SandboxStateError) -> None:
        self.outage.state_error(self.settings.outage_retry_interval)
        self.error = error

    async def one_off(self, waiter: Waiter) -> Sandbox:
        """A fresh one-session sandbox for `waiter`, tracked for shutdown (rule 14)."""

        def make(number: int) -> Sandbox:
            recycle_at = self._recycle_deadline()
            return Sandbox(self, number, 0, reusable=False, recycle_at=recycle_at, ephemeral=True)

        sandbox = self.pool.add_one_off(make, waiter)
        try:
            await sandbox.start()
        except SandboxStateError as exc:
            self._bring_up_failed(exc)
            raise
        except BaseException:  # cancelled: leave nothing running
            await sandbox.shutdown_quietly()
            raise
        self.outage.recovered()
        assert waiter.sandbox is sandbox
        self.nursery.start_soon(sandbox.housekeep)
        return sandbox

    def dispatch(self) -> None:
        """Serve waiters from idle sandboxes, then grow the pool for the ones left."""
        self.pool.serve_waiters()
        while self._can_grow() and (waiter := self.pool.next_waiter()) is not None:
            self._grow(waiter)

    def top_up(self) -> None:
        """Grow back to `min_ready`; during an outage, also try one now and then."""
        while self.pool.below_min_ready and self._can_grow():
            self._grow()
        if self.outage.failing and self._can_grow():
            # Bring-ups have been failing: try one now and then, even with min_ready met,
            # so that the outage ends as soon as the backend is back.
            self._grow()

    @property
    def offline_duration(self) -> float:
        """How long bring-ups have been failing with state errors (0 when healthy)."""
        return self.outage.duration

    @property
    def in_outage(self) -> bool:
        return self.outage.past(self.settings.outage_grace)

    # -- acquire and sessions ----------------------------------------------------------

    async def acquire(self, *, timeout: float | None = None) -> Sandbox:
        """An ACQUIRED sandbox: an idle one, a new one if below max, or the next freed.

        Raises:
            PoolOverloadedError: none within `timeout` (default `acquire_timeout`).
            EnvironmentOutageError, EnvironmentOfflineError: the environment cannot serve.
            SandboxError: a user error while bringing up a sandbox for this caller.
        """
        return await admission.acquire(self, timeout=timeout)

    async def open_session(
        self,
        *,
        ttl: float | None = None,
        lease: float | None = None,
        labels: Mapping[str, str] | None = None,
        hint: str | None = None,
        timeout: float | None = None,
    ) -> Session:
        """Acquire a sandbox and start a session on it; close it with `close_session`."""
        return await leases.open_session(
            self, ttl=ttl, lease=lease, labels=labels, hint=hint, timeout=timeout
        )

    async def close_session(self, session: Session) -> None:
        """End `session` and give its sandbox back (or shut it down); idempotent.

        Raises:
            SessionTeardownError: a feature failed to end the session.
        """
        await leases.close_session(self, session)

    def session(
        self,
        *,
        ttl: float | None = None,
        lease: float | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AbstractAsyncContextManager[Session]:
        """`async with env.session() as s: await s.exec([...])`."""
        return leases.session(self, ttl=ttl, lease=lease, labels=labels, timeout=timeout)

    async def expire(self, session: Session) -> None:
        """End a session whose TTL or lease ran out; its sandbox is shut down (rule 19)."""
        await leases.expire(self, session)

    def find_session(self, session_id: str) -> Session | None:
        """The session in progress with this id, if any."""
        return self.pool.session(session_id)

    def sessions(self) -> list[Session]:
        """The sessions in progress."""
        return [s for s in self.pool.live_sessions() if not s.ended]

    # -- life --------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Bring up `min_ready` sandboxes and go ONLINE (rule 13); one-shot.

        Raises:
            Exception: a user error during start (the environment ends OFFLINE).
        """
        if self.status is not E.CREATED:
            raise RuntimeError(f"environment {self.name} was already started")
        self._nursery = nursery
        self._unsubscribe = [
            self.bus.add_listener(HandlerListener(self, handler)) for handler in self._handlers
        ]
        started = trio.current_time()
        self.bus.publish(EnvironmentStarting(self))
        try:
            await self.backend.reset()  # what a killed previous run left behind
            for feature in self.env_features:
                self._env_set_up.append(feature)
                await self._env_hook(feature, "setup", feature.setup(None))
            errors: list[BaseException] = []

            async def first(sandbox: Sandbox) -> None:
                if (error := await self._bring_up(sandbox, None)) is not None:
                    errors.append(error)

            async with trio.open_nursery() as bring_up:
                for _ in range(self.pool.min_ready):
                    bring_up.start_soon(first, self.pool.add(self._new_sandbox))
            if errors:
                raise errors[0]
        except Exception as exc:
            self.error = exc
            self.bus.publish(EnvironmentStarted(self, trio.current_time() - started, exc))
            await self._stop()
            raise
        self._set_status(E.ONLINE)
        self.bus.publish(EnvironmentStarted(self, trio.current_time() - started, None))
        self.top_up()  # slots whose first bring-up failed with a state error: retried later
        nursery.start_soon(self.maintenance.run)

    async def _env_hook(
        self, feature: Feature, hook: Hook, work: Awaitable[None], counter: int = 0
    ) -> None:
        """Run one environment-scoped feature hook and publish it; errors propagate."""
        started = trio.current_time()
        error: BaseException | None = None
        try:
            await work
        except Exception as exc:
            error = exc
            raise
        finally:
            duration = trio.current_time() - started
            self.bus.publish(
                FeatureHookRan.of(
                    self, None, feature, hook=hook, duration=duration, error=error, counter=counter
                )
            )

    async def housekeep_feature(self, feature: Feature, counter: int) -> None:
        """An environment-scoped feature's `housekeep` (for maintenance); errors propagate."""
        await self._env_hook(feature, "housekeep", feature.housekeep(None), counter)

    def _set_status(self, new: EnvironmentStatus) -> None:
        old = self.status
        if new not in ENVIRONMENT_TRANSITIONS[old]:
            raise RuntimeError(f"environment {self.name}: illegal transition {old} -> {new}")
        self.status = new
        self.bus.publish(
            EnvironmentStatusChanged.of(self, self.backend.name, old=old, new=new, error=self.error)
        )

    def resize(self, settings: EnvironmentConfig) -> None:
        """Apply new pool settings in place (reload): sizes, timeouts, intervals."""
        self.settings = settings
        for sandbox in self.pool.resize(settings.min_ready, settings.max_size):
            self.retire(sandbox)
        self.maintenance.wake()

    async def shutdown(self) -> None:
        """Stop housekeeping, end sessions, shut every sandbox down, go OFFLINE (rule 20)."""
        if self.status is E.CREATED:
            self._set_status(E.SHUTTING_DOWN)
            self._set_status(E.OFFLINE)
            self._offline.set()
            return
        await self._stop()

    async def _stop(self) -> None:
        if self.status in (E.SHUTTING_DOWN, E.OFFLINE):
            with trio.CancelScope(shield=True):
                await self._offline.wait()
            return
        started = trio.current_time()
        self._set_status(E.SHUTTING_DOWN)
        self.bus.publish(EnvironmentShuttingDown(self, self.offline_duration))
        with trio.CancelScope(shield=True):
            self.maintenance.stop()
            self.pool.fail_waiters(
                EnvironmentOfflineError(f"environment {self.name} is shutting down")
            )
            limiter = trio.CapacityLimiter(self.settings.shutdown_concurrency)

            async def stop_one(sandbox: Sandbox) -> None:
                async with limiter:
                    await sandbox.shutdown_quietly()

            async with trio.open_nursery() as nursery:
                for sandbox in self.pool.sandboxes():
                    if sandbox.status is not S.OFFLINE:
                        nursery.start_soon(stop_one, sandbox)
            error: BaseException | None = None
            for feature in reversed(self._env_set_up):
                try:
                    await self._env_hook(feature, "teardown", feature.teardown(None))
                except Exception as exc:
                    error = error or exc
            self._set_status(E.OFFLINE)
            now = trio.current_time()
            self.bus.publish(
                EnvironmentShutdown(
                    self, now - started, now - self._created_at, error or self.error
                )
            )
            for unsubscribe in self._unsubscribe:
                unsubscribe()
            self._offline.set()

    def stats(self) -> dict[str, Any]:
        """Counts per sandbox status, waiters, sessions, outage (rule 21)."""
        counts = {status.value: 0 for status in SandboxStatus}
        for sandbox in self.pool.sandboxes():
            counts[sandbox.status.value] += 1
        return {
            "name": self.name,
            "backend": self.backend.name,
            "status": self.status.value,
            "sandboxes": counts,
            "min_ready": self.pool.min_ready,
            "max_size": self.pool.max_size,
            "waiters": self.pool.waiting,
            "active_sessions": self.pool.sessions,
            "offline_duration": round(self.offline_duration, 3),
            "outage": self.in_outage,
            "error": None if self.error is None else str(self.error),
        }


@asynccontextmanager
async def open_environment(
    name: str,
    settings: EnvironmentConfig,
    backend: Backend,
    features: Sequence[Feature] = (),
    *,
    handlers: Sequence[EventHandler] = (),
    bus: EventBus | None = None,
    rng: random.Random | None = None,
) -> AsyncIterator[Environment]:
    """Start an environment, yield it ONLINE, shut it down on exit."""
    env = Environment(name, settings, backend, features, handlers=handlers, bus=bus, rng=rng)
    try:
        async with trio.open_nursery() as nursery:
            await env.start(nursery)
            try:
                yield env
            finally:
                await env.shutdown()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The environment's own tasks never raise: a lone error is the caller's (or the
        # start's), and it should surface as itself, not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
