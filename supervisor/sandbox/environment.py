"""An environment: a pool of sandboxes handed out as sessions, kept warm and healthy.

Why it is built this way (rule numbers are the semantics page's):
- The pool's size is a number of slots. A slot is taken synchronously, before any await,
  when a sandbox is created, and given back only when that sandbox is OFFLINE, so
  `max_size` holds under any concurrency (rule 15; the reference overshoots).
- Waiters queue in arrival order and are served by handing a sandbox to the head of the
  queue the moment one turns READY: an event, not a poll. A sandbox grown for a waiter is
  reserved for it (rule 15), and if that waiter gave up meanwhile it goes to the next.
- Bring-up failures with a state error start the offline clock and pace retries by
  `outage_retry_interval`; past `outage_grace` acquires fail fast (rule 17).
- Maintenance (replacing dead sandboxes, topping up to `min_ready`) runs as soon as a
  sandbox goes OFFLINE, not at the next housekeeping tick; the periodic run adds
  recycling, shrinking and environment-feature housekeeping (rule 18).
- Session leases are watched by one sleeping task per session, so an expired session is
  ended at its deadline rather than up to an interval later (rule 19).
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog
import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import (
    EnvironmentOfflineError,
    EnvironmentOutageError,
    FeatureTeardownError,
    PoolOverloadedError,
    SandboxStateError,
    SessionTeardownError,
)
from supervisor.sandbox.backends import Backend
from supervisor.sandbox.events import Dispatcher, EventHandler
from supervisor.sandbox.features import Feature
from supervisor.sandbox.sandbox import Sandbox
from supervisor.sandbox.session import Session, new_session_id
from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus

E = EnvironmentStatus
S = SandboxStatus
log = structlog.get_logger("supervisor.environment")


@dataclass(eq=False, slots=True)
class _Waiter:
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
        self.feature_errors: dict[tuple[str, str], int] = {}
        self.housekeep_counter = 0
        self.sessions: dict[str, Session] = {}
        self._rng = rng or random.Random()
        self._nursery: trio.Nursery | None = None
        self._slots: dict[int, Sandbox] = {}
        self._generations: dict[int, int] = {}
        self._free: list[int] = list(range(settings.max_size))
        self._ephemeral: set[Sandbox] = set()
        self._ephemeral_count = 0
        self._live = 0
        self._ready: dict[Sandbox, None] = {}
        self._waiters: deque[_Waiter] = deque()
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
            raise RuntimeError(f"environment {self.name} is not running")
        return self._nursery

    # -- hooks called by sandboxes -----------------------------------------------------

    def sandbox_status_changed(
        self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus
    ) -> None:
        if old is S.READY:
            self._ready.pop(sandbox, None)
        if new is S.READY:
            self._offer(sandbox)
        elif new is S.OFFLINE:
            self._gone(sandbox)

    def feature_failed(self, feature: Feature, hook: str) -> None:
        key = (feature.name, hook)
        self.feature_errors[key] = self.feature_errors.get(key, 0) + 1

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

    def _offer(self, sandbox: Sandbox) -> None:
        """A sandbox turned READY: to its reserving waiter, else the oldest waiter, else idle."""
        reserved, sandbox.reserved_for = sandbox.reserved_for, None
        if isinstance(reserved, _Waiter) and not reserved.done:
            reserved.serve(sandbox)
            return
        if sandbox.reusable and sandbox.slot >= self.settings.max_size:
            self.nursery.start_soon(_shutdown_quietly, sandbox)  # its slot was resized away
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                waiter.serve(sandbox)
                return
        self._ready[sandbox] = None

    def _gone(self, sandbox: Sandbox) -> None:
        self._live -= 1
        if sandbox in self._ephemeral:
            self._ephemeral.discard(sandbox)
        elif self._slots.get(sandbox.slot) is sandbox:
            self._tally["dead"] += 1
            if sandbox.slot < self.settings.max_size:
                heapq.heappush(self._free, sandbox.slot)
            else:
                del self._slots[sandbox.slot]
        self._wake.set()

    def _new_sandbox(self, *, reserved_for: _Waiter | None = None) -> Sandbox:
        """Take a free slot (synchronously: this is what keeps max_size exact)."""
        slot = heapq.heappop(self._free)
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

    async def _bring_up(self, sandbox: Sandbox, waiter: _Waiter | None) -> BaseException | None:
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

    def _top_up(self) -> None:
        while self._live < self.settings.min_ready and self._can_grow():
            self.nursery.start_soon(self._bring_up, self._new_sandbox(), None)
        if self._offline_since is not None and self._can_grow():
            # Bring-ups have been failing: try one now and then, even with min_ready met,
            # so that the outage ends as soon as the backend is back.
            self.nursery.start_soon(self._bring_up, self._new_sandbox(), None)

    def _trial_due(self) -> bool:
        """In an outage, one bring-up per `outage_retry_interval` still tries (and, if it
        works, ends the outage); the rest fail fast."""
        if trio.current_time() < self._next_bring_up:
            return False
        self._next_bring_up = trio.current_time() + self.settings.outage_retry_interval
        return True

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

    def _require_online(self) -> None:
        if self.status is not E.ONLINE:
            raise EnvironmentOfflineError(f"environment {self.name} is {self.status}")
        if self.in_outage and not self._trial_due():
            self.events.on_acquire_rejected(self, "outage")
            raise EnvironmentOutageError(
                f"environment {self.name} has failed to bring up sandboxes for "
                f"{self.offline_duration:.0f}s: {self.error}",
                retry_after=self.settings.outage_retry_interval,
            )

    async def acquire(self, *, timeout: float | None = None) -> Sandbox:
        """An ACQUIRED sandbox: an idle one, a new one if below max, or the next freed.

        Raises:
            PoolOverloadedError: none within `timeout` (default `acquire_timeout`).
            EnvironmentOutageError, EnvironmentOfflineError: the environment cannot serve.
            SandboxError: a user error while bringing up a sandbox for this caller.
        """
        if self.status is E.ONLINE and not self._waiters and self._ready:
            return await self._take_ready()  # a READY sandbox serves, outage or not
        self._require_online()
        waiter = _Waiter()
        if self.settings.max_size == 0:
            # Rule 14: a fresh sandbox per session, tracked so shutdown still reaches it.
            self._ephemeral_count += 1
            sandbox = Sandbox(self, self._ephemeral_count - 1, 0, reusable=False, ephemeral=True)
            sandbox.reserved_for = waiter
            self._ephemeral.add(sandbox)
            self._live += 1
            try:
                await sandbox.start()
            except SandboxStateError as exc:
                self._bring_up_failed(exc)
                raise
            except BaseException:  # cancelled: leave nothing running
                await _shutdown_quietly(sandbox)
                raise
            self._offline_since = None
            assert waiter.sandbox is sandbox
            self.nursery.start_soon(sandbox.housekeep)
            return sandbox
        if not self._waiters and self._ready:
            return await self._take_ready()
        self._waiters.append(waiter)
        self._dispatch()
        limit = self.settings.acquire_timeout if timeout is None else timeout
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
                    self._waiters.remove(waiter)
        if waiter.error is not None:
            raise waiter.error
        if waiter.sandbox is None:
            if self.in_outage or self.status is not E.ONLINE:
                self._require_online()
            self.events.on_acquire_rejected(self, "overload")
            raise PoolOverloadedError(
                f"environment {self.name}: all {self.settings.max_size} sandboxes stayed busy "
                f"for {limit:g}s",
                retry_after=max(1.0, min(limit, 5.0)),
            )
        return waiter.sandbox

    async def _take_ready(self) -> Sandbox:
        sandbox = next(iter(self._ready))
        sandbox.acquire()
        try:
            # A checkpoint even when nothing blocks: a caller looping over sessions must
            # still let the lease watchers and housekeeping run (found by bench/).
            await trio.lowlevel.checkpoint()
        except BaseException:
            sandbox.release_unused()
            raise
        return sandbox

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
        started = trio.current_time()
        sandbox = await self.acquire(timeout=timeout)
        session = Session(
            new_session_id(hint or self.name),
            sandbox,
            ttl=self.settings.session_ttl if ttl is None else ttl,
            lease=lease,
            labels=labels,
        )
        session.acquire_wait = trio.current_time() - started
        self.sessions[session.id] = session
        try:
            await sandbox.start_session(session)
        except BaseException:
            self.sessions.pop(session.id, None)
            raise
        self.nursery.start_soon(self._watch_lease, session)
        return session

    async def close_session(self, session: Session) -> None:
        """End `session` and give its sandbox back (or shut it down); idempotent.

        Raises:
            SessionTeardownError: a feature failed to end the session.
        """
        try:
            await session.sandbox.end_session()
        finally:
            self.sessions.pop(session.id, None)

    @asynccontextmanager
    async def session(
        self,
        *,
        ttl: float | None = None,
        lease: float | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[Session]:
        """`async with env.session() as s: await s.exec([...])`."""
        session = await self.open_session(ttl=ttl, lease=lease, labels=labels, timeout=timeout)
        try:
            yield session
        except SandboxStateError as exc:
            session.sandbox.record(exc)  # rule 6: not reused after this session
            raise
        finally:
            with trio.CancelScope(shield=True):
                await self.close_session(session)

    async def _watch_lease(self, session: Session) -> None:
        try:
            while not session.ended:
                with trio.move_on_at(session.deadline):
                    await session.ended_event.wait()
                if session.ended:
                    return
                if trio.current_time() >= session.deadline:
                    await self.expire(session)
                    return
        finally:
            # However it ended (released, expired, its sandbox condemned by housekeeping).
            self.sessions.pop(session.id, None)

    async def expire(self, session: Session) -> None:
        """End a session whose TTL or lease ran out; its sandbox is shut down (rule 19)."""
        if session.ended:
            return
        self._tally["expired"] += 1
        log.info("session_expired", environment=self.name, session=session.id)
        try:
            with contextlib.suppress(SessionTeardownError):
                await session.sandbox.end_session(expired=True)
        finally:
            self.sessions.pop(session.id, None)

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
                await self._env_hook(feature, "setup")
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
        nursery.start_soon(self._housekeeping_loop)

    def _set_status(self, new: EnvironmentStatus) -> None:
        old, self.status = self.status, new
        self.events.on_environment_status(self, old, new)

    async def _env_hook(self, feature: Feature, hook: str) -> None:
        started = trio.current_time()
        error: BaseException | None = None
        try:
            if hook == "setup":
                await feature.setup(None)
            elif hook == "teardown":
                await feature.teardown(None)
            else:
                await feature.housekeep(None)
        except Exception as exc:
            error = exc
            self.feature_failed(feature, hook)
            raise
        finally:
            duration = trio.current_time() - started
            if hook == "setup":
                self.events.on_feature_setup(None, feature, duration, error)
            elif hook == "teardown":
                self.events.on_feature_teardown(None, feature, duration, error)
            else:
                self.events.on_feature_housekeep(
                    None, feature, self.housekeep_counter, duration, error
                )

    async def _housekeeping_loop(self) -> None:
        interval = self.settings.housekeep_interval
        next_tick = trio.current_time() + interval
        last_feature_run: dict[str, float] = {}
        with trio.CancelScope() as self._housekeeper:
            while True:
                wake_at = next_tick
                retry_at = self._next_bring_up
                if retry_at > trio.current_time() and (
                    self._waiters or self._live < self.settings.min_ready
                ):
                    wake_at = min(wake_at, retry_at)  # a paced bring-up retry is due then
                with trio.move_on_at(wake_at):
                    await self._wake.wait()
                self._wake = trio.Event()
                if self.in_outage:
                    self._fail_waiters(
                        EnvironmentOutageError(
                            f"environment {self.name} is in an outage: {self.error}",
                            retry_after=self.settings.outage_retry_interval,
                        )
                    )
                self._top_up()
                self._dispatch()
                if trio.current_time() >= next_tick:
                    await self._housekeep(last_feature_run)
                    interval = self.settings.housekeep_interval
                    next_tick = trio.current_time() + interval

    async def _housekeep(self, last_feature_run: dict[str, float]) -> None:
        """The periodic run: recycle, shrink, environment features, one event (rule 18)."""
        self.housekeep_counter += 1
        started = now = trio.current_time()
        counts = dict.fromkeys(("dead", "replaced", "recycled", "shrunk", "expired"), 0)
        for key in ("dead", "replaced", "expired"):
            counts[key], self._tally[key] = self._tally[key], 0
        limit = self.settings.max_sessions_per_sandbox
        for sandbox in list(self._ready):
            if now >= sandbox.recycle_at or (
                limit is not None and sandbox.sessions_served >= limit
            ):
                counts["recycled"] += 1
                self._retire(sandbox)
        idle_timeout = self.settings.idle_timeout
        if idle_timeout is not None:
            excess = self._live - self.settings.min_ready
            for sandbox in sorted(self._ready, key=lambda s: s.status_since):
                if excess <= 0 or now - sandbox.status_since < idle_timeout:
                    break
                counts["shrunk"] += 1
                excess -= 1
                self._retire(sandbox)
        error: BaseException | None = None
        for feature in self.env_features:
            interval = feature.housekeep_interval or self.settings.housekeep_interval
            if now - last_feature_run.get(feature.name, -math.inf) < interval:
                continue
            last_feature_run[feature.name] = now
            try:
                await self._env_hook(feature, "housekeep")
            except Exception as exc:
                error = error or exc
                log.warning("feature_housekeep_failed", environment=self.name, feature=feature.name)
        self._top_up()
        self.events.on_environment_housekeep(
            self, self.housekeep_counter, trio.current_time() - started, error, counts
        )

    def _retire(self, sandbox: Sandbox) -> None:
        """Take an idle sandbox out of service now and shut it down in the background."""
        self._ready.pop(sandbox, None)
        self.nursery.start_soon(_shutdown_quietly, sandbox)

    def _fail_waiters(self, error: BaseException) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done:
                waiter.fail(error)

    def resize(self, settings: EnvironmentConfig) -> None:
        """Apply new pool settings in place (reload): sizes, timeouts, intervals."""
        old_max = self.settings.max_size
        self.settings = settings
        if settings.max_size != old_max:
            taken = {slot for slot, sb in self._slots.items() if sb.status is not S.OFFLINE}
            self._free = [slot for slot in range(settings.max_size) if slot not in taken]
            heapq.heapify(self._free)
            for sandbox in list(self._ready):
                if sandbox.slot >= settings.max_size:
                    self._retire(sandbox)
        self._wake.set()

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
                    await _shutdown_quietly(sandbox)

            async with trio.open_nursery() as nursery:
                for sandbox in self._all():
                    if sandbox.status is not S.OFFLINE:
                        nursery.start_soon(stop_one, sandbox)
            error: BaseException | None = None
            for feature in reversed(self._env_set_up):
                try:
                    await self._env_hook(feature, "teardown")
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


async def _shutdown_quietly(sandbox: Sandbox) -> None:
    try:
        await sandbox.shutdown()
    except FeatureTeardownError as exc:
        log.warning("sandbox_teardown_failed", sandbox=sandbox.id, error=str(exc))


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
