"""One sandbox: its status machine, its sessions, and the error split.

Why it is shaped this way (rule numbers are the semantics page's):
- Setup work (start, session setup, proactive setup for the next session) runs inside
  one cancel scope at a time. Shutdown cancels that scope and waits for it to unwind
  before tearing anything down, and `_set_status` refuses every move out of
  SHUTTING_DOWN/OFFLINE, so a sandbox that began shutting down never comes back to
  READY (rule 10), whatever was in flight.
- Proactive setup for the next session runs while the sandbox is SETTING_UP, where
  nobody can acquire it; it turns READY only when that setup is done. No later session
  can start on it mid-setup, so its state cannot be clobbered (rule 11).
- A state error (`SandboxStateError`) is recorded on the sandbox and condemns it: it is
  shut down at the next decision point and never reused. A user error (anything else)
  is the caller's to handle and leaves the sandbox reusable, except in
  `teardown_session`, where we cannot tell what state the user's code left behind.
- Shutdown is shielded and bounded: a client that goes away mid-release must not leave
  a half-torn-down sandbox behind. Everything that happens is published on the bus.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import structlog
import trio

from supervisor.errors import (
    FeatureTeardownError,
    SandboxLostError,
    SandboxStateError,
    SessionBusyError,
    SessionTeardownError,
)
from supervisor.sandbox import keepalive
from supervisor.sandbox.activity import Activities
from supervisor.sandbox.event_types import (
    SandboxHousekept,
    SandboxShutdown,
    SandboxStarted,
    SandboxStatusChanged,
    SessionEnded,
    SessionStarted,
)
from supervisor.sandbox.hooks import Hooks, HookSet
from supervisor.sandbox.status import SANDBOX_TRANSITIONS, SandboxStatus

if TYPE_CHECKING:
    from supervisor.config.environment import EnvironmentConfig
    from supervisor.sandbox.instance import Backend, ExecOptions, ExecResult, Instance
    from supervisor.sandbox.session import Session
    from supervisor.supervision.bus import EventBus

S = SandboxStatus
T = TypeVar("T")
Work = Callable[["Instance"], Awaitable[T]]
log = structlog.get_logger("supervisor.sandbox")


class Host(Protocol):
    """The environment, as its sandboxes see it (`environment.Environment`)."""

    @property
    def name(self) -> str: ...
    @property
    def backend(self) -> Backend: ...
    @property
    def features(self) -> Sequence[HookSet[Sandbox]]: ...
    @property
    def settings(self) -> EnvironmentConfig: ...
    @property
    def stop_grace(self) -> float: ...
    @property
    def nursery(self) -> trio.Nursery: ...
    @property
    def bus(self) -> EventBus: ...
    def status_changed(self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus) -> None:
        """After every status change: the pool takes it in (idle, handed out, gone)."""

    def reusable(self, sandbox: Sandbox) -> bool:
        """Whether `sandbox` may serve another session (rule 8)."""

    def session_over(self, session: Session) -> None:
        """`session` has ended: it no longer counts as active."""


class Sandbox:
    """One isolated execution place of an environment, with id `env/slot:generation`."""

    def __init__(
        self,
        env: Host,
        slot: int,
        generation: int,
        *,
        reusable: bool,
        recycle_at: float,
        ephemeral: bool = False,
    ) -> None:
        self.env = env
        self.slot = slot
        self.generation = generation
        # A pool of max_size 0 numbers its one-session sandboxes apart from the slots.
        self.id = f"{env.name}/{'e' if ephemeral else ''}{slot}:{generation}"
        self.reusable = reusable
        self.status = S.CREATED
        self.created_at = trio.current_time()
        self.status_since = self.created_at
        self.instance: Instance | None = None
        self.prepared = False  # setup_session already ran for the next session
        self.state_error: BaseException | None = None
        self.session: Session | None = None
        self.sessions_served = 0
        self.recycle_at = recycle_at
        self.offline = trio.Event()
        self._work: trio.CancelScope | None = None
        self._idle = trio.Event()
        self._idle.set()
        self._exiting: trio.Event | None = None
        self._closing = False
        self._housekeeper: trio.CancelScope | None = None
        self._hooks = Hooks(self, env.features, env, env.bus)
        self._activities = Activities(self, env, env.bus)

    def __repr__(self) -> str:
        return f"<Sandbox {self.id} {self.status}>"

    @property
    def closing(self) -> bool:
        """Whether shutdown has begun (the sandbox will never serve again)."""
        return self._closing

    @property
    def in_session(self) -> bool:
        return self.status is S.IN_SESSION

    # -- status ------------------------------------------------------------------------

    def _set_status(self, new: SandboxStatus) -> bool:
        """Move to `new`; refused (False) once shutdown began, unless moving towards OFFLINE."""
        old = self.status
        if self._closing and new not in (S.EXITING_SESSION, S.SHUTTING_DOWN, S.OFFLINE):
            return False
        if new not in SANDBOX_TRANSITIONS[old]:
            raise RuntimeError(f"sandbox {self.id}: illegal transition {old} -> {new}")
        now = trio.current_time()
        span, self.status, self.status_since = now - self.status_since, new, now
        env = self.env
        # Published before the pool reacts, so that the events come in causal order (a
        # READY sandbox handed to a waiter is READY, then ACQUIRED). On a bus nobody
        # hears, not even built: this is the hottest path of a session cycle.
        if not env.bus.idle:
            event = SandboxStatusChanged.of(
                env, env.backend.name, self, old=old, new=new, span=span
            )
            env.bus.publish(event)
        env.status_changed(self, old, new)
        return True

    def record(self, error: BaseException) -> None:
        """Remember the first state error: the sandbox will not be reused."""
        if self.state_error is None:
            self.state_error = error
            log.warning("sandbox_state_error", sandbox=self.id, error=str(error))

    @contextlib.contextmanager
    def _setup_work(self) -> Iterator[trio.CancelScope]:
        scope = trio.CancelScope()
        self._work, self._idle = scope, trio.Event()
        try:
            with scope:
                yield scope
        finally:
            self._work = None
            self._idle.set()

    # -- start -------------------------------------------------------------------------

    async def start(self) -> None:
        """CREATED -> SETTING_UP -> READY: backend, each `setup`, proactive `setup_session`.

        On failure the sandbox is shut down and the error re-raised (rule 3).
        """
        started = trio.current_time()
        self._set_status(S.SETTING_UP)
        try:
            with self._setup_work():
                self.instance = await self.env.backend.create(self.id)
                await self._hooks.setup()
                if self.env.settings.proactive_session_setup and self.reusable:
                    await self._hooks.setup_sessions(None, [])
                    self.prepared = True
            if self._closing:
                raise SandboxStateError(f"sandbox {self.id} was shut down while starting")
        except Exception as exc:
            if isinstance(exc, SandboxStateError):
                self.record(exc)
            self._started(started, exc)
            with contextlib.suppress(FeatureTeardownError):
                await self.shutdown()
            raise
        self._set_status(S.READY)
        self._started(started, None)

    def _started(self, started: float, error: BaseException | None) -> None:
        duration = trio.current_time() - started
        self.env.bus.publish(SandboxStarted(self.env, self, duration, error))

    # -- sessions ----------------------------------------------------------------------

    def acquire(self) -> None:
        """READY -> ACQUIRED (the caller owns the sandbox until it releases it)."""
        if self.status is not S.READY:
            raise RuntimeError(f"sandbox {self.id} is {self.status}, not READY")
        self._set_status(S.ACQUIRED)

    def release_unused(self) -> None:
        """Give back a sandbox that was acquired but never used: ACQUIRED -> READY."""
        if self.status is S.ACQUIRED and not self.closing:
            self._set_status(S.READY)

    async def start_session(self, session: Session) -> None:
        """ACQUIRED -> SETTING_UP -> IN_SESSION, running `setup_session` unless done already.

        On failure: the session-start event, `teardown_session` for every feature whose
        `setup_session` was attempted, shutdown, and the error re-raised (rule 5).
        """
        if self.status is not S.ACQUIRED or self.session is not None:
            # It broke (or was shut down) between being handed out and this call.
            raise SandboxStateError(f"sandbox {self.id} is {self.status}, not acquired")
        started = trio.current_time()
        self.session = session
        if self.prepared and not self._closing:
            # Proactive setup already ran every setup_session: nothing can fail here.
            self.prepared = False
            self._set_status(S.SETTING_UP)
            self._set_status(S.IN_SESSION)
            self.sessions_served += 1
            self._session_started(session, started, None)
            return
        attempted = list(self._hooks.features) if self.prepared else []
        self._set_status(S.SETTING_UP)
        failure: Exception | None = None
        with trio.CancelScope(shield=True):
            # Only shutdown can cancel this scope; until it is left, shutdown waits, so the
            # teardown_session hooks of a failed setup run before any teardown does.
            with self._setup_work():
                try:
                    if not self.prepared:
                        await self._hooks.setup_sessions(session, attempted)
                    self.prepared = False
                    if self._closing or not self._set_status(S.IN_SESSION):
                        raise SandboxStateError(f"sandbox {self.id} was shut down while setting up")
                except BaseException as exc:
                    failure = (
                        exc
                        if isinstance(exc, Exception)
                        else SandboxStateError(f"sandbox {self.id} was shut down while setting up")
                    )
                    with trio.CancelScope(shield=True):
                        for feature in attempted:
                            await self._hooks.teardown_session(feature, session)
                    if not isinstance(exc, Exception):
                        raise  # our own scope's cancellation: it stops here
            if failure is None and not self.in_session:
                failure = SandboxStateError(f"sandbox {self.id} was shut down while setting up")
            if failure is not None:
                if isinstance(failure, SandboxStateError):
                    self.record(failure)
                self._session_started(session, started, failure)
                self.session = None
                session.end("setup_failed")
                with contextlib.suppress(FeatureTeardownError):
                    await self.shutdown()
        if failure is not None:
            raise failure
        self.sessions_served += 1
        self._session_started(session, started, None)

    def _session_started(
        self, session: Session, started: float, error: BaseException | None
    ) -> None:
        env, duration = self.env, trio.current_time() - started
        if not env.bus.idle:
            env.bus.publish(
                SessionStarted.of(
                    env, env.backend.name, self, session, duration=duration, error=error
                )
            )

    def _require(self, session: Session) -> Instance:
        if self.session is not session or self.status is not S.IN_SESSION:
            raise SessionBusyError(f"session {session.id} is not in progress on {self.id}")
        assert self.instance is not None
        return self.instance

    async def client_work(
        self, session: Session, name: str, args: Mapping[str, Any], work: Work[T]
    ) -> T:
        """`work(instance)` for `session`, tracked: ending the session cancels it (rule 6)."""
        return await self._activities.run(name, session, work(self._require(session)), args)

    async def exec(
        self, session: Session, argv: Sequence[str], *, timeout: float | None, options: ExecOptions
    ) -> ExecResult:
        """Client work: run `argv`."""
        limit = self.env.settings.exec_timeout if timeout is None else timeout
        work: Work[ExecResult] = lambda i: i.exec(argv, timeout=limit, options=options)  # noqa: E731
        return await self.client_work(session, "exec", {"argv": list(argv)}, work)

    async def run_script(
        self, session: Session, script: str, *, timeout: float | None, options: ExecOptions
    ) -> ExecResult:
        limit = self.env.settings.exec_timeout if timeout is None else timeout
        work: Work[ExecResult] = lambda i: i.run_script(script, timeout=limit, options=options)  # noqa: E731
        return await self.client_work(session, "run_script", {}, work)

    async def end_session(self, *, expired: bool = False, reason: str = "") -> None:
        """IN_SESSION -> EXITING_SESSION -> READY (or shutdown); idempotent (rules 7, 8).

        Raises:
            SessionTeardownError: a `teardown_session` failed (the sandbox is shut down).
        """
        if self.status is not S.IN_SESSION or self.session is None:
            return
        session = self.session
        started = trio.current_time()
        self._exiting = trio.Event()
        self._set_status(S.EXITING_SESSION)
        errors: dict[str, BaseException] = {}
        with trio.CancelScope(shield=True):
            # Client work still running belongs to the session that is ending: stop it
            # before cleaning up after it, or it would write into the next session.
            if self._activities.running:
                await self._activities.stop(self.env.stop_grace)
            try:
                await self._hooks.teardown_sessions(session, errors)
            finally:
                self.session = None
                session.end(reason or ("expired" if expired else "released"), expired=expired)
                self.env.session_over(session)
                self._exiting.set()
            teardown_error = SessionTeardownError(errors) if errors else None
            env, now = self.env, trio.current_time()
            if not env.bus.idle:
                ended = SessionEnded.of(
                    env,
                    env.backend.name,
                    self,
                    session,
                    duration=now - started,
                    lifetime=now - session.started_at,
                    error=self.state_error or teardown_error,
                )
                env.bus.publish(ended)
            if self._closing:
                return  # shutdown ended this session; it carries on from here
            if self.state_error is not None:
                await self.shutdown_quietly()
                return
            if teardown_error is not None:
                await self.shutdown_quietly()
                raise teardown_error
            if expired or not self.env.reusable(self):
                await self.shutdown_quietly()
                return
            if self.env.settings.proactive_session_setup:
                self._set_status(S.SETTING_UP)
                self.env.nursery.start_soon(self._prepare_next)
            else:
                self._set_status(S.READY)

    async def _prepare_next(self) -> None:
        """Proactive setup for the next session, off the releasing client's path."""
        if self._closing:  # shut down between the release and this task's start
            return
        try:
            with self._setup_work():
                await self._hooks.setup_sessions(None, [])
            if self._closing:
                return
            self.prepared = True
            self._set_status(S.READY)
        except Exception as exc:
            if isinstance(exc, SandboxStateError):
                self.record(exc)
            log.warning("proactive_setup_failed", sandbox=self.id, error=str(exc))
            await self.shutdown_quietly()

    # -- housekeeping ------------------------------------------------------------------

    async def housekeep(self) -> None:
        """Keepalive probes, death watch and feature housekeeping until shutdown (rule 12)."""
        with trio.CancelScope() as self._housekeeper:
            if self._closing or self.instance is None:
                return
            await keepalive.watch(self, self.instance, self._hooks.chores())

    @property
    def keepalive_interval(self) -> float:
        return self.env.settings.keepalive_interval

    def probed(self, counter: int, duration: float, error: BaseException | None) -> None:
        """Publish one keepalive probe."""
        self.env.bus.publish(SandboxHousekept(self.env, self, counter, duration, error))

    def condemn(self, error: BaseException) -> None:
        """A state error outside client work: record it and shut down (ending any session)."""
        self.record(error)
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        self.env.nursery.start_soon(self.shutdown_quietly)

    # -- shutdown ----------------------------------------------------------------------

    async def shutdown_quietly(self) -> None:
        """Shut down; a feature teardown failure is logged, not raised."""
        try:
            await self.shutdown()
        except FeatureTeardownError as exc:
            log.warning("sandbox_teardown_failed", sandbox=self.id, error=str(exc))

    async def shutdown(self) -> None:
        """Tear down and stop; re-entrant, never resurrects (rule 10).

        Raises:
            FeatureTeardownError: user errors from `teardown` (state errors are recorded).
        """
        if self._closing:
            with trio.CancelScope(shield=True):
                await self.offline.wait()
            return
        self._closing = True
        started = trio.current_time()
        errors: dict[str, BaseException] = {}
        stopped = self.instance is None
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self.env.stop_grace):
                if self._work is not None:
                    self._work.cancel()
                await self._idle.wait()
                if self._housekeeper is not None:
                    self._housekeeper.cancel()
                if self.status is S.IN_SESSION:
                    reason = "sandbox_failed" if self.state_error is not None else "shutdown"
                    if isinstance(self.state_error, SandboxLostError):
                        reason = "lost"
                    with contextlib.suppress(SessionTeardownError):
                        await self.end_session(reason=reason)
                elif self._exiting is not None:
                    await self._exiting.wait()
                self._set_status(S.SHUTTING_DOWN)
                await self._hooks.teardown(errors)
                if self.instance is not None:
                    try:
                        await self.instance.stop()
                    except Exception as exc:
                        self.record(exc)
                    stopped = True
            if self.status is not S.SHUTTING_DOWN:
                self._set_status(S.SHUTTING_DOWN)
            if not stopped and self.instance is not None:
                log.warning("sandbox_shutdown_timeout", sandbox=self.id)
                with contextlib.suppress(Exception), trio.move_on_after(self.env.stop_grace):
                    await self.instance.stop()  # still remove what we can
            self._set_status(S.OFFLINE)
            failure = FeatureTeardownError(errors) if errors else None
            now = trio.current_time()
            lifetime, error = now - self.created_at, failure or self.state_error
            self.env.bus.publish(SandboxShutdown(self.env, self, now - started, lifetime, error))
            self.offline.set()
        if failure is not None:
            raise failure

    # -- helpers for features ----------------------------------------------------------

    def _instance(self) -> Instance:
        if self.instance is None:
            raise SandboxStateError(f"sandbox {self.id} has no running instance")
        return self.instance

    async def instance_exec(self, argv: Sequence[str], *, timeout: float) -> ExecResult:
        return await self._instance().exec(argv, timeout=timeout)

    async def instance_script(self, script: str, *, timeout: float) -> ExecResult:
        return await self._instance().run_script(script, timeout=timeout)

    async def instance_put(self, source: Path, dest: str) -> None:
        await self._instance().put(source, dest)

    def connection(self) -> dict[str, Any]:
        return self._instance().connection()
