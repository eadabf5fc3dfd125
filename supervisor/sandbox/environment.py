"""An environment: a pool of sandboxes handed out as sessions, kept warm and healthy.

The environment owns the pool's state and its growth; handing sandboxes out lives in
`admission`, sessions and their leases in `leases`, periodic upkeep in `maintenance`.

Why it is built this way (rule numbers are the semantics page's):
- The pool's size is a number of slots. A slot is taken synchronously, before any await,
  when a sandbox is created, and given back only when that sandbox is OFFLINE, so
  `max_size` holds under any concurrency (rule 15; the reference overshoots).
- Bring-up failures with a state error start the offline clock and pace retries by
  `outage_retry_interval`; past `outage_grace` acquires fail fast (rule 17).
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import structlog
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import EnvironmentOfflineError, SandboxStateError
from supervisor.sandbox import admission, leases, maintenance
from supervisor.sandbox.admission import Waiter
from supervisor.sandbox.backends import Backend
from supervisor.sandbox.events import Dispatcher, EventHandler
from supervisor.sandbox.features import Feature
from supervisor.sandbox.hooks import run_env_hook
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.session import Session
from supervisor.sandbox.slots import FreeSlots
from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus

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
        rng: random.Random | None = None,
        stop_grace: float = 60.0,
    ) -> None:
        self.name = name
        self.settings = settings
        self.backend = backend
        self.features = [f for f in features if f.sandbox_scoped]
        self.env_features = [f for f in features if not f.sandbox_scoped]
        self.events = Dispatcher(handlers)
        self.stop_grace = stop_grace
        self.status = E.CREATED
        self.error: BaseException | None = None
        self.housekeep_counter = 0
        self.sessions: dict[str, Session] = {}
        self._rng = rng or random.Random()
        self._nursery: trio.Nursery | None = None
        self._slots: dict[int, Sandbox] = {}
        self._generations: dict[int, int] = {}
        self._free = FreeSlots(settings.max_size)
        self._ephemeral: set[Sandbox] = set()
        self._ephemeral_count = 0
        self._live = 0
        self._ready: dict[Sandbox, None] = {}
        self._waiters: deque[Waiter] = deque()
        self._offline_since: float | None = None
        self._next_bring_up = -math.inf
        self._wake = trio.Event()
        self._housekeeper: trio.CancelScope | None = None
        self._created_at = trio.current_time()
        self._offline = trio.Event()
        self._tally = {"dead": 0, "replaced": 0, "expired": 0}
        self._env_set_up: list[Feature] = []

    def __repr__(self) -> str:
        return f"<Environment {self.name} {self.status}>"

    @property
    def nursery(self) -> trio.Nursery:
        if self._nursery is None:
            raise EnvironmentOfflineError(f"environment {self.name} is not running")
        return self._nursery

    # -- hooks called by sandboxes -----------------------------------------------------

    def sandbox_status_changed(
        self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus
    ) -> None:
        if old is S.READY:
            self._ready.pop(sandbox, None)
        if new is S.READY:
            admission.offer(self, sandbox)
        elif new is S.OFFLINE:
            self._gone(sandbox)

    def recycle_deadline(self, created_at: float) -> float:
        """When a sandbox created at `created_at` is due for recycling (jittered)."""
        age = self.settings.max_sandbox_age
        if age is None:
            return math.inf
        return created_at + age * (1.0 - self.settings.recycle_jitter * self._rng.random())

    def reusable(self, sandbox: Sandbox) -> bool:
        """Whether `sandbox` may serve another session (rule 8: max 0, recycling, resize)."""
        limit = self.settings.max_sessions_per_sandbox
        return (
            sandbox.reusable
            and self.status is E.ONLINE
            and sandbox.slot < self.settings.max_size
            and trio.current_time() < sandbox.recycle_at
            and (limit is None or sandbox.sessions_served < limit)
        )

    # -- pool --------------------------------------------------------------------------

    def _gone(self, sandbox: Sandbox) -> None:
        self._live -= 1
        if sandbox in self._ephemeral:
            self._ephemeral.discard(sandbox)
        elif self._slots.get(sandbox.slot) is sandbox:
            self._tally["dead"] += 1
            if sandbox.slot < self.settings.max_size:
                self._free.give_back(sandbox.slot)
            else:
                del self._slots[sandbox.slot]
        self._wake.set()

    def _new_sandbox(self, *, reserved_for: Waiter | None = None) -> Sandbox:
        """Take a free slot (synchronously: this is what keeps max_size exact)."""
        slot = self._free.take()
        generation = self._generations.get(slot, -1) + 1
        if generation:
            self._tally["replaced"] += 1
        self._generations[slot] = generation
        sandbox = Sandbox(self, slot, generation, reusable=True)
        sandbox.reserved_for = reserved_for
        self._slots[slot] = sandbox
        self._live += 1
        return sandbox

    def _can_grow(self) -> bool:
        return (
            self.status is E.ONLINE
            and bool(self._free)
            and self._live < self.settings.max_size
            and trio.current_time() >= self._next_bring_up
        )

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
                self._waiters.appendleft(waiter)  # keeps its place; retried after the interval
            self._wake.set()
            return None
        except Exception as exc:
            # A user error goes to the caller at once: no retry now, no outage (rule 17).
            self._next_bring_up = trio.current_time() + self.settings.outage_retry_interval
            self.error = exc
            if waiter is not None and not waiter.done:
                waiter.fail(exc)
            else:
                log.warning("sandbox_bring_up_failed", environment=self.name, error=str(exc))
            return exc
        self._offline_since = None
        self.error = None
        self.nursery.start_soon(sandbox.housekeep)
        return None

    def _bring_up_failed(self, error: SandboxStateError) -> None:
        """A state error while bringing a sandbox up: start the offline clock (rule 17)."""
        if self._offline_since is None:
            self._offline_since = trio.current_time()
        self._next_bring_up = trio.current_time() + self.settings.outage_retry_interval
        self.error = error

    def _dispatch(self) -> None:
        """Serve waiters from idle sandboxes, then grow the pool for the ones left."""
        while self._waiters and self._ready:
            waiter = self._waiters.popleft()
            if not waiter.done:
                sandbox = next(iter(self._ready))
                waiter.serve(sandbox)
        while self._waiters and self._can_grow():
            waiter = self._waiters.popleft()
            if not waiter.done:
                self.nursery.start_soon(
                    self._bring_up, self._new_sandbox(reserved_for=waiter), waiter
                )

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                waiter.fail(error)

    def _top_up(self) -> None:
        while self._live < self.settings.min_ready and self._can_grow():
            self.nursery.start_soon(self._bring_up, self._new_sandbox(), None)
        if self._offline_since is not None and self._can_grow():
            # Bring-ups have been failing: try one now and then, even with min_ready met,
            # so that the outage ends as soon as the backend is back.
            self.nursery.start_soon(self._bring_up, self._new_sandbox(), None)

    @property
    def offline_duration(self) -> float:
        """How long bring-ups have been failing with state errors (0 when healthy)."""
        if self._offline_since is None:
            return 0.0
        return trio.current_time() - self._offline_since

    @property
    def in_outage(self) -> bool:
        return (
            self._offline_since is not None and self.offline_duration >= self.settings.outage_grace
        )

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

    # -- life --------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """Bring up `min_ready` sandboxes and go ONLINE (rule 13); one-shot.

        Raises:
            Exception: a user error during start (the environment ends OFFLINE).
        """
        if self.status is not E.CREATED:
            raise RuntimeError(f"environment {self.name} was already started")
        self._nursery = nursery
        started = trio.current_time()
        self.events.on_environment_starting(self)
        try:
            reset = getattr(self.backend, "reset", None)
            if reset is not None:  # what a killed previous run left behind
                await reset()
            for feature in self.env_features:
                self._env_set_up.append(feature)
                await run_env_hook(self, feature, "setup")
            errors: list[BaseException] = []

            async def first(sandbox: Sandbox) -> None:
                if (error := await self._bring_up(sandbox, None)) is not None:
                    errors.append(error)

            async with trio.open_nursery() as bring_up:
                for _ in range(self.settings.min_ready):
                    bring_up.start_soon(first, self._new_sandbox())
            if errors:
                raise errors[0]
        except Exception as exc:
            self.error = exc
            self.events.on_environment_start(self, trio.current_time() - started, exc)
            await self._stop()
            raise
        self._set_status(E.ONLINE)
        self.events.on_environment_start(self, trio.current_time() - started, None)
        self._top_up()  # slots whose first bring-up failed with a state error: retried later
        nursery.start_soon(maintenance.housekeeping_loop, self)

    def _set_status(self, new: EnvironmentStatus) -> None:
        old, self.status = self.status, new
        self.events.on_environment_status(self, old, new)

    def resize(self, settings: EnvironmentConfig) -> None:
        """Apply new pool settings in place (reload): sizes, timeouts, intervals."""
        maintenance.resize(self, settings)

    def _all(self) -> list[Sandbox]:
        return [*self._slots.values(), *self._ephemeral]

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
        self.events.on_environment_shutting_down(self, self.offline_duration)
        with trio.CancelScope(shield=True):
            if self._housekeeper is not None:
                self._housekeeper.cancel()
            self._fail_waiters(EnvironmentOfflineError(f"environment {self.name} is shutting down"))
            limiter = trio.CapacityLimiter(self.settings.shutdown_concurrency)

            async def stop_one(sandbox: Sandbox) -> None:
                async with limiter:
                    await sandbox.shutdown_quietly()

            async with trio.open_nursery() as nursery:
                for sandbox in self._all():
                    if sandbox.status is not S.OFFLINE:
                        nursery.start_soon(stop_one, sandbox)
            error: BaseException | None = None
            for feature in reversed(self._env_set_up):
                try:
                    await run_env_hook(self, feature, "teardown")
                except Exception as exc:
                    error = error or exc
            self._set_status(E.OFFLINE)
            now = trio.current_time()
            self.events.on_environment_shutdown(
                self, now - started, now - self._created_at, error or self.error
            )
            self._offline.set()

    def stats(self) -> dict[str, Any]:
        """Counts per sandbox status, waiters, sessions, outage (rule 21)."""
        counts = {status.value: 0 for status in SandboxStatus}
        for sandbox in self._all():
            counts[sandbox.status.value] += 1
        return {
            "name": self.name,
            "backend": self.backend.name,
            "status": self.status.value,
            "sandboxes": counts,
            "min_ready": self.settings.min_ready,
            "max_size": self.settings.max_size,
            "waiters": sum(1 for w in self._waiters if not w.done),
            "active_sessions": len(self.sessions),
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
    rng: random.Random | None = None,
) -> AsyncIterator[Environment]:
    """Start an environment, yield it ONLINE, shut it down on exit."""
    env = Environment(name, settings, backend, features, handlers=handlers, rng=rng)
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
