"""The per-resource supervisor task: the state machine that starts, watches and restarts.

One `ResourceSupervisor` per resource runs `serve()` in the daemon's root nursery. The
loop owns the resource's whole life; operators steer it by setting a goal (`start`,
`stop`, `restart`), which wakes the loop wherever it waits. Everything timed reads
`trio.current_time()`, so tests drive it with `MockClock` and assert exact virtual times
(tests/unit/supervision/test_supervisor.py).

Why the loop is shaped this way:
- Deaths are pushed, not polled: RUNNING awaits `handle.wait()`; periodic checks exist only
  for what has no event (a hung server).
- A handle that must end goes through STOPPING, whatever the reason, so "STOPPING" always
  means a stop is in progress and the event stream tells the whole story.
- The first-failure-restarts-at-once rule and the counter reset after `reset_after` of
  continuous RUNNING are evaluated when a failure happens, so no timer has to run while
  the resource is healthy.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
import trio

from supervisor.errors import MisconfiguredError, StartError
from supervisor.supervision.bus import EventBus
from supervisor.supervision.concurrency import race, tagged
from supervisor.supervision.monitor import monitor
from supervisor.supervision.policy import RestartIntensity, Termination, decide
from supervisor.supervision.resource import CheckResult, Handle, Resource, hopeless
from supervisor.supervision.settings import Settings, Snapshot
from supervisor.supervision.states import ALLOWED, HOPELESS, Liveness, State, Transition
from supervisor.supervision.waits import Goal, Waits

_AT_REST = frozenset({State.STOPPED, State.EXITED})
_SHARED_RNG = random.Random()


class ResourceSupervisor(Waits):
    """Keeps one resource in the state its goal asks for."""

    # One per resource: slots, a logger bound on use and events made only when waited on
    # keep a supervisor small (the bench's 1,000-resource memory figure).
    __slots__ = (  # and those of Waits
        "_bus", "_changed", "_failures", "_handle", "_intensity", "_on_check", "_retired",
        "_rng", "_running_since", "_skip_wait", "_start_reason", "_stop_reason",
        "_task_status", "_wake_at", "attempted", "checks", "depends_on", "detail", "liveness", "name",
        "resource", "restarts", "settings", "since", "state",
    )  # fmt: skip

    def __init__(
        self,
        name: str,
        resource: Resource,
        settings: Settings,
        *,
        bus: EventBus,
        depends_on: Sequence[ResourceSupervisor] = (),
        rng: random.Random | None = None,
        on_check: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self.resource = resource
        self.settings = settings
        self.depends_on = tuple(depends_on)
        self._bus = bus
        self._rng = rng or _SHARED_RNG  # jitter only: one generator serves them all
        self._on_check = on_check

        self.state = State.STOPPED
        self.liveness = Liveness.UNKNOWN
        self.detail = ""
        self.restarts = 0
        self.checks = 0
        self.since = trio.current_time()
        self.attempted = False  # the first start attempt is over (or cannot begin yet)
        self._task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
        self._retired = False

        self._goal = Goal.RUN if settings.autostart else Goal.STOP
        self._start_reason = "autostart"
        self._stop_reason = "operator"
        self._restart_requested = False
        self._skip_wait = False
        self._poke = trio.Event()
        self._interrupt: trio.CancelScope | None = None  # see _until_exit_or_command
        self._changed: trio.Event | None = None  # made by the first waiter after a change
        self._handle: Handle | None = None
        self._failures = 0
        self._running_since: float | None = None
        self._wake_at = 0.0
        self._intensity = RestartIntensity(
            settings.restart.intensity.max_restarts, settings.restart.intensity.within
        )

    # ----------------------------------------------------------------- operator verbs

    def start(self, reason: str = "operator") -> None:
        """Start now: from STOPPED, EXITED or FATAL at once, from BACKOFF without the wait."""
        if self._goal is Goal.RUN and self.state in (
            State.STARTING,
            State.RUNNING,
            State.STOPPING,
        ):
            return
        if self._goal is Goal.STOP and self.state in (State.STARTING, State.RUNNING):
            self._goal = Goal.RUN  # a stop not yet acted on is simply withdrawn
            self._wake()
            return
        self._fresh_start()
        self._goal = Goal.RUN
        self._start_reason = reason
        self._skip_wait = True
        self._wake()

    def stop(self, reason: str = "operator") -> None:
        """Stop and stay stopped until started again."""
        self._goal = Goal.STOP
        self._stop_reason = reason
        self._wake()

    def restart(self, reason: str = "operator") -> None:
        """Stop if running, then start again at once."""
        if self.state not in (State.RUNNING, State.STARTING):
            self.start(reason)
            return
        self._goal = Goal.RUN
        self._restart_requested = True
        self._start_reason = reason
        self._wake()

    def update(self, settings: Settings) -> None:
        """Apply settings that need no restart (policy, backoff, timeouts) in place."""
        self.settings = settings
        self._intensity.max_restarts = settings.restart.intensity.max_restarts
        self._intensity.within = settings.restart.intensity.within
        self._wake()

    def reconfigure(self, config: Any, settings: Settings) -> None:
        """A changed config that needs no new instance; FATAL is retried at once."""
        self.resource.reconfigure(config)
        self.update(settings)
        if self.state is State.FATAL:
            self.start("reload")

    def replace(self, resource: Resource, settings: Settings) -> None:
        """A rebuilt resource (its config changed shape): running, it restarts as the new one."""
        self.resource = resource
        self.update(settings)
        if self.state in (State.STARTING, State.RUNNING, State.BACKOFF):
            self.restart("reload")
        elif self.state is State.FATAL:
            self.start("reload")

    def depend_on(self, dependencies: Sequence[ResourceSupervisor]) -> None:
        """Start after, and stop before, these (a reload may change them)."""
        self.depends_on = tuple(dependencies)

    def snapshot(self) -> Snapshot:
        handle = self._handle
        return Snapshot(
            name=self.name,
            kind=self.resource.kind,
            state=self.state,
            liveness=self.liveness,
            detail=self.detail,
            restarts=self.restarts,
            since=self.since,
            pid=handle.pid if handle else None,
            ident=handle.ident if handle else None,
            endpoint=self.resource.endpoint,
            identity=self.resource.full_name or None,
        )

    async def wait_for(self, predicate: Callable[[ResourceSupervisor], bool]) -> None:
        """Return once `predicate(self)` holds (checked after every transition)."""
        while not predicate(self):
            await self.next_change()()

    def next_change(self) -> Callable[[], Awaitable[None]]:
        """A wait that returns at the first change after this call (bound now, so a change
        between this call and the wait is not missed)."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed.wait

    @property
    def _log(self) -> structlog.typing.FilteringBoundLogger:
        # Bound on use: it logs rarely (crashes, checks at debug), and a bound logger per
        # resource cost about 0.5 KB.
        return structlog.get_logger("supervisor.resource").bind(  # type: ignore[no-any-return]
            resource=self.name, kind=self.resource.kind
        )

    def retire(self) -> None:
        """Make `serve` return (a reload removed the resource, after `stop_and_wait`): no
        cancel scope per resource is kept for this."""
        self._retired = True
        self._poke.set()

    async def stop_and_wait(self, reason: str = "shutdown") -> None:
        """Stop the resource and return once it is down."""
        self.stop(reason)
        await self.wait_for(lambda _: self._goal is Goal.STOP and self.state in _AT_REST)

    # ----------------------------------------------------------------------- the loop

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Supervise until cancelled; `started()` once the first start attempt is over
        (called from the loop itself: a second task per resource cost memory)."""
        self._task_status = task_status
        try:
            await self._supervise()
        finally:
            # Cancelled before a graceful stop: still end (and reap) what we started.
            if (handle := self._handle) is not None:
                self._handle = None
                with trio.CancelScope(shield=True), trio.move_on_after(5.0):
                    await handle.stop(0.0)
                handle.kill()

    async def _supervise(self) -> None:
        while True:
            self._poke = trio.Event()
            if self._retired:
                return
            if self._goal is Goal.STOP:
                if self.state in (State.BACKOFF, State.FATAL, State.STOPPING):
                    self._transition(State.STOPPED, self._stop_reason)
                self._attempted()
                await self._poke.wait()
                continue
            if self.state in (State.BACKOFF, State.FATAL):
                if not self._skip_wait and not await self._sleep_until(self._wake_at):
                    continue
                if self.state is State.FATAL and not self._skip_wait:
                    self._start_reason = "fatal_retry"
                    self._intensity.reset()
                elif self.state is State.BACKOFF and not self._skip_wait:
                    self._start_reason = "backoff"
            self._skip_wait = False
            if not await self._dependencies_running():
                continue
            await self._run_once()

    async def _sleep_until(self, deadline: float) -> bool:
        """Sleep until `deadline`; False if woken earlier by an operator verb."""
        with trio.move_on_at(deadline):
            await self._poke.wait()
            return False
        return True

    async def _dependencies_running(self) -> bool:
        """Wait until every dependency is RUNNING; False if woken by an operator verb."""
        while True:
            waiting = [d for d in self.depends_on if d.state is not State.RUNNING]
            if not waiting:
                return True
            self.detail = "waiting for " + ", ".join(d.name for d in waiting)
            if all(d.attempted for d in waiting):
                self._attempted()
            waits = [d.next_change() for d in waiting]
            poked = await race(*(tagged(w, False) for w in waits), tagged(self._poke.wait, True))
            if poked:
                return False

    async def _run_once(self) -> None:
        """One life: STARTING, maybe RUNNING, ending in whatever comes next."""
        self._transition(State.STARTING, self._start_reason, liveness=Liveness.UNKNOWN)
        self._restart_requested = False
        started_at = trio.current_time()
        outcome = await self._starting()
        kind = outcome[0]
        if kind == "ready":
            self._running_since = trio.current_time()
            self._transition(
                State.RUNNING,
                "ready",
                detail=f"ready in {self._running_since - started_at:.3f}s",
                liveness=Liveness.ONLINE,
            )
            outcome = await self._running()
            kind = outcome[0]
        if kind == "command":
            await self._end_on_command()
        elif kind == "exited":
            term: Termination = outcome[1]
            self._handle = None
            success = self.resource.is_success(term)
            self._after_failure(term.reason, term.detail, success=success)
        elif kind == "hopeless":
            result: CheckResult = outcome[1]
            await self._stop_handle(result.liveness.value.lower())
            self._fatal(result.detail, liveness=result.liveness)
        else:  # start_failed, start_timeout, health_check, liveness
            await self._stop_handle(kind)
            self._after_failure(kind, outcome[1], success=False)
        self._running_since = None

    async def _starting(self) -> tuple[str, Any]:
        """Launch, then wait for ready, an early exit, a stop/restart, or start_timeout."""

        async def launch(finish: Callable[[tuple[str, Any]], None], nursery: trio.Nursery) -> None:
            try:
                self._handle = handle = await self.resource.start()
            except MisconfiguredError as exc:
                return finish(hopeless(exc))
            except StartError as exc:
                return finish(("start_failed", str(exc)))
            except Exception as exc:
                self._log.exception("resource_start_crashed")
                return finish(("start_failed", f"unexpected error: {exc!r}"))
            self._changed_now()

            async def exited() -> None:
                finish(("exited", await handle.wait()))

            nursery.start_soon(exited)
            try:
                await self.resource.ready(handle)
            except MisconfiguredError as exc:
                return finish(hopeless(exc))
            except Exception as exc:
                self._log.exception("resource_ready_crashed")
                return finish(("start_failed", f"unexpected error: {exc!r}"))
            return finish(("ready", None))

        timeout = self.settings.start_timeout
        with trio.move_on_after(timeout):
            return await self._until_outcome(launch)
        return ("start_timeout", f"not ready within {timeout:g}s")

    async def _running(self) -> tuple[str, Any]:
        """Wait for an exit, a failed health check, or a stop/restart."""
        handle = self._handle
        assert handle is not None
        if self.resource.check_settings is None:
            return await self._until_exit_or_command(handle)

        async def watch(finish: Callable[[tuple[str, Any]], None], nursery: trio.Nursery) -> None:
            if self.resource.check_settings is not None:

                async def health() -> None:
                    finish(await monitor(self.resource, handle, self._checked, self._log))

                nursery.start_soon(health)
            finish(("exited", await handle.wait()))

        return await self._until_outcome(watch)

    def _checked(self, result: CheckResult, duration: float, consecutive: int) -> None:
        self.checks += 1
        if self._on_check is not None:
            self._on_check(self.resource.kind, duration)
        self._log.debug(
            "resource_checked", liveness=result.liveness.value, duration=round(duration, 6)
        )
        if result.liveness in HOPELESS:
            return  # the run ends on it: FATAL says the rest
        if result.ok:
            self._set_liveness(Liveness.ONLINE, "")
            self._changed_now()
            return
        check = self.resource.check_settings
        assert check is not None
        self._set_liveness(result.liveness, f"{result.detail} ({consecutive}/{check.failures})")

    async def _end_on_command(self) -> None:
        if self._restart_requested and self._goal is Goal.RUN:
            # STOPPING -> STARTING: the next loop turn starts again without waiting.
            self._restart_requested = False
            self.restarts += 1
            await self._stop_handle(self._start_reason, restart=True)
            self._skip_wait = True
        else:
            await self._stop_handle(self._stop_reason)
            self._transition(State.STOPPED, self._stop_reason)

    async def _stop_handle(self, reason: str, *, restart: bool = False) -> None:
        """STOPPING while a live handle is ended (graceful, then forced)."""
        handle = self._handle
        if handle is None:
            return
        self._transition(State.STOPPING, reason, liveness=Liveness.OFFLINE, restart=restart)
        # Not shielded: cancelling the supervisor (a forced shutdown) must cut a graceful
        # stop short; serve() then kills the handle. The extra bound covers reaping a
        # SIGKILLed process that is stuck in the kernel.
        with trio.move_on_after(self.settings.stop_timeout + 5.0):
            await handle.stop(self.settings.stop_timeout)
        handle.kill()
        self._handle = None

    def _after_failure(self, reason: str, detail: str, *, success: bool) -> None:
        """Act on what follows a run that ended: BACKOFF, EXITED or FATAL (`policy.decide`)."""
        now = trio.current_time()
        ran = None if self._running_since is None else now - self._running_since
        restart = self.settings.restart
        verdict = decide(
            restart, self._intensity, now, failures=self._failures, ran_for=ran,
            success=success, rand=self._rng.random(),
        )  # fmt: skip
        self._failures = verdict.failures
        if verdict.next is State.EXITED:
            self._goal = Goal.STOP
            self._transition(State.EXITED, reason, detail=detail, liveness=Liveness.OFFLINE)
            return
        if verdict.next is State.FATAL:
            limit = restart.intensity
            self._fatal(
                f"{detail}; more than {limit.max_restarts} restarts within {limit.within:g}s",
                liveness=Liveness.OFFLINE,
                reason=reason,
            )
            return
        self._wake_at = now + verdict.delay
        self.restarts += 1
        self._transition(
            State.BACKOFF, reason, detail=detail, attempt=self._failures,
            next_delay=verdict.delay, restart=True, liveness=Liveness.OFFLINE,
        )  # fmt: skip

    def _fatal(self, detail: str, *, liveness: Liveness, reason: str = "") -> None:
        retry = self.settings.restart.fatal_retry_after
        self._wake_at = trio.current_time() + retry
        self._transition(
            State.FATAL,
            reason or liveness.value.lower(),
            detail=f"{detail}; retrying in {retry:g}s",
            next_delay=retry,
            liveness=liveness,
        )

    def _fresh_start(self) -> None:
        self._failures = 0
        self._intensity.reset()

    # -------------------------------------------------------------------- bookkeeping

    def _attempted(self) -> None:
        """The first start attempt is over (or cannot begin yet): `serve` has started."""
        if not self.attempted:
            self.attempted = True
            self._task_status.started()
            # Let it go: a nursery.start() status holds that call's nursery and its scope.
            self._task_status = trio.TASK_STATUS_IGNORED
            self._changed_now()  # a dependent waiting for our first attempt looks again

    def _transition(
        self,
        to: State,
        reason: str,
        *,
        detail: str = "",
        attempt: int = 0,
        next_delay: float | None = None,
        restart: bool = False,
        liveness: Liveness | None = None,
    ) -> None:
        if to not in ALLOWED[self.state]:
            raise RuntimeError(f"{self.name}: illegal transition {self.state} -> {to}")
        previous = self.state
        self.state = to
        self.detail = detail
        self.since = trio.current_time()
        if liveness is not None:
            self.liveness = liveness
        if to in (State.RUNNING, State.BACKOFF, State.EXITED, State.FATAL):
            self._attempted()
        self._bus.publish(
            Transition(
                subject="resource", name=self.name, kind=self.resource.kind,
                from_state=previous.value, to_state=to.value, reason=reason, detail=detail,
                attempt=attempt, next_delay=next_delay, restart=restart,
                identity=self.resource.full_name,
            )
        )  # fmt: skip
        self._changed_now()

    def _set_liveness(self, liveness: Liveness, detail: str) -> None:
        if liveness is not self.liveness or detail != self.detail:
            self.liveness = liveness
            self.detail = detail
            self._changed_now()

    def _changed_now(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None
