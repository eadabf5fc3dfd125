"""Event handlers: the 18 callbacks of the semantics page, and their safe fan-out.

`EventHandler` has a no-op default for every callback: subclass it and override what you
need. The environment calls its handlers through `Dispatcher`, which runs each handler in
turn and logs and counts any exception instead of letting it escape: a raising handler
never blocks a transition (the reference lets one block a status change).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from supervisor.sandbox.environment import Environment
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session
    from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus

log = structlog.get_logger("supervisor.sandbox.events")


class EventHandler:
    """Callbacks for everything that happens in an environment; all no-ops by default.

    Durations and spans are seconds; `error` is None on success.
    """

    # environment
    def on_environment_starting(self, env: Environment) -> None: ...
    def on_environment_start(
        self, env: Environment, duration: float, error: BaseException | None
    ) -> None: ...
    def on_environment_housekeep(
        self,
        env: Environment,
        counter: int,
        duration: float,
        error: BaseException | None,
        counts: Mapping[str, int],
    ) -> None: ...
    def on_environment_shutting_down(self, env: Environment, offline_duration: float) -> None: ...
    def on_environment_shutdown(
        self, env: Environment, duration: float, lifetime: float, error: BaseException | None
    ) -> None: ...

    # daemon additions (not in the reference's 18): status moves and refusals
    def on_environment_status(
        self, env: Environment, old: EnvironmentStatus, new: EnvironmentStatus
    ) -> None: ...
    def on_acquire_rejected(self, env: Environment, reason: str) -> None: ...

    # sandbox
    def on_sandbox_start(
        self, sandbox: Sandbox, duration: float, error: BaseException | None
    ) -> None: ...
    def on_sandbox_status_change(
        self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus, span: float
    ) -> None: ...
    def on_sandbox_shutdown(
        self, sandbox: Sandbox, duration: float, lifetime: float, error: BaseException | None
    ) -> None: ...
    def on_session_start(
        self, sandbox: Sandbox, session: Session, duration: float, error: BaseException | None
    ) -> None: ...
    def on_session_end(
        self,
        sandbox: Sandbox,
        session: Session,
        duration: float,
        lifetime: float,
        error: BaseException | None,
    ) -> None: ...
    def on_session_activity(
        self,
        sandbox: Sandbox,
        name: str,
        session: Session | None,
        duration: float,
        error: BaseException | None,
        args: Mapping[str, Any],
    ) -> None: ...
    def on_sandbox_housekeep(
        self, sandbox: Sandbox, counter: int, duration: float, error: BaseException | None
    ) -> None: ...

    # feature
    def on_feature_setup(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_teardown(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_setup_session(
        self,
        sandbox: Sandbox,
        feature: Feature,
        session: Session | None,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_teardown_session(
        self,
        sandbox: Sandbox,
        feature: Feature,
        session: Session,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_activity(
        self,
        sandbox: Sandbox,
        feature: Feature,
        name: str,
        session: Session | None,
        duration: float,
        error: BaseException | None,
        args: Mapping[str, Any],
    ) -> None: ...
    def on_feature_housekeep(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        counter: int,
        duration: float,
        error: BaseException | None,
    ) -> None: ...


class Dispatcher:
    """Calls every registered handler; one that raises is logged, counted and skipped."""

    def __init__(self, handlers: Sequence[EventHandler] = ()) -> None:
        self._handlers = list(handlers)
        self.handler_errors = 0

    def add(self, handler: EventHandler) -> Callable[[], None]:
        """Register `handler`; returns a function that removes it."""
        self._handlers.append(handler)
        return lambda: self._handlers.remove(handler)

    def __getattr__(self, callback: str) -> Callable[..., None]:
        if not callback.startswith("on_"):
            raise AttributeError(callback)

        def fan_out(*args: Any) -> None:
            for handler in self._handlers:
                try:
                    getattr(handler, callback)(*args)
                except Exception:
                    self.handler_errors += 1
                    log.exception("event_handler_failed", callback=callback, handler=repr(handler))

        setattr(self, callback, fan_out)  # built once per callback name
        return fan_out
