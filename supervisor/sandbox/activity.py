"""Client work in flight on a sandbox (`exec`, `run_script`, file transfers), stoppable
when its session ends.

Each piece of work runs in its own cancel scope, tracked until it finishes, and is
published when it does (`SessionActivity`). Ending a session cancels them all and waits
(up to a grace) before any `teardown_session` runs: work left running belongs to the
session that is ending and would otherwise write into the next one. Work cut short that
way fails with `SessionExpiredError`; a state error it raises is recorded on the sandbox
(rule 6).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from supervisor.errors import SandboxStateError, SessionExpiredError
from supervisor.sandbox.event_types import EnvironmentView, SandboxView, SessionActivity

if TYPE_CHECKING:
    from supervisor.sandbox.session import Session
    from supervisor.supervision.bus import EventBus

T = TypeVar("T")


class Worksite(SandboxView, Protocol):
    """The sandbox the work runs on, as the work sees it (`Sandbox`)."""

    def record(self, error: BaseException) -> None: ...


class Activities:
    """The client work running on one sandbox."""

    def __init__(self, sandbox: Worksite, env: EnvironmentView, bus: EventBus) -> None:
        self._sandbox = sandbox
        self._env = env
        self._bus = bus
        self._scopes: set[trio.CancelScope] = set()
        self._done = trio.Event()
        self._done.set()

    async def run(
        self, name: str, session: Session, work: Awaitable[T], args: Mapping[str, Any]
    ) -> T:
        """Await `work` for `session` and publish it; cancellable by `stop`."""
        started = trio.current_time()
        error: BaseException | None = None
        done = False
        scope = trio.CancelScope()
        if not self._scopes:
            self._done = trio.Event()
        self._scopes.add(scope)
        try:
            with scope:
                result = await work
                done = True
        except Exception as exc:
            error = exc
            if isinstance(exc, SandboxStateError):
                self._sandbox.record(exc)
            raise
        finally:
            self._scopes.discard(scope)
            if not self._scopes:
                self._done.set()
            if scope.cancelled_caught:
                error = SessionExpiredError(f"session {session.id} ended while {name} ran")
            if not self._bus.idle:
                duration = trio.current_time() - started
                self._bus.publish(
                    SessionActivity(self._env, self._sandbox, name, session, duration, error, args)
                )
        if not done:
            raise SessionExpiredError(f"session {session.id} ended while {name} ran")
        return result

    @property
    def running(self) -> bool:
        return bool(self._scopes)

    async def stop(self, grace: float) -> None:
        """Cancel all running work and wait up to `grace` for it to finish."""
        for scope in list(self._scopes):
            scope.cancel()
        with trio.move_on_after(grace):
            await self._done.wait()
