"""Event handlers: the 18 callbacks of the semantics page, as a subscriber of the bus.

`EventHandler` has a no-op default for every callback: subclass it, override what you
need and pass it to an environment (`handlers=[...]`). The environment subscribes one
`HandlerListener` per handler to its bus while it runs; the listener turns that
environment's typed events (`event_types`) back into callback calls. A handler that
raises is a listener that raises: the bus logs and counts it, and no status change
waits for it (the reference lets a handler block one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from supervisor.sandbox.event_types import (
    AcquireRejected,
    EnvironmentHousekept,
    EnvironmentShutdown,
    EnvironmentShuttingDown,
    EnvironmentStarted,
    EnvironmentStarting,
    EnvironmentStatusChanged,
    EnvironmentView,
    FeatureHookRan,
    FeatureView,
    SandboxEvent,
    SandboxHousekept,
    SandboxShutdown,
    SandboxStarted,
    SandboxStatusChanged,
    SandboxView,
    SessionActivity,
    SessionEnded,
    SessionStarted,
)
from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus

if TYPE_CHECKING:
    from supervisor.sandbox.session import Session
    from supervisor.supervision.states import Event


class EventHandler:
    """Callbacks for everything that happens in an environment; all no-ops by default.

    Durations and spans are seconds; `error` is None on success.
    """

    # environment
    def on_environment_starting(self, env: EnvironmentView) -> None: ...
    def on_environment_start(
        self, env: EnvironmentView, duration: float, error: BaseException | None
    ) -> None: ...
    def on_environment_housekeep(
        self,
        env: EnvironmentView,
        counter: int,
        duration: float,
        error: BaseException | None,
        counts: Mapping[str, int],
    ) -> None: ...
    def on_environment_shutting_down(
        self, env: EnvironmentView, offline_duration: float
    ) -> None: ...
    def on_environment_shutdown(
        self, env: EnvironmentView, duration: float, lifetime: float, error: BaseException | None
    ) -> None: ...

    # daemon additions (not in the reference's 18): status moves and refusals
    def on_environment_status(
        self, env: EnvironmentView, old: EnvironmentStatus, new: EnvironmentStatus
    ) -> None: ...
    def on_acquire_rejected(self, env: EnvironmentView, reason: str) -> None: ...

    # sandbox
    def on_sandbox_start(
        self, sandbox: SandboxView, duration: float, error: BaseException | None
    ) -> None: ...
    def on_sandbox_status_change(
        self, sandbox: SandboxView, old: SandboxStatus, new: SandboxStatus, span: float
    ) -> None: ...
    def on_sandbox_shutdown(
        self, sandbox: SandboxView, duration: float, lifetime: float, error: BaseException | None
    ) -> None: ...
    def on_session_start(
        self,
        sandbox: SandboxView,
        session: Session,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_session_end(
        self,
        sandbox: SandboxView,
        session: Session,
        duration: float,
        lifetime: float,
        error: BaseException | None,
    ) -> None: ...
    def on_session_activity(
        self,
        sandbox: SandboxView,
        name: str,
        session: Session | None,
        duration: float,
        error: BaseException | None,
        args: Mapping[str, Any],
    ) -> None: ...
    def on_sandbox_housekeep(
        self, sandbox: SandboxView, counter: int, duration: float, error: BaseException | None
    ) -> None: ...

    # feature (`sandbox` is None for an environment-scoped feature)
    def on_feature_setup(
        self,
        sandbox: SandboxView | None,
        feature: FeatureView,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_teardown(
        self,
        sandbox: SandboxView | None,
        feature: FeatureView,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_setup_session(
        self,
        sandbox: SandboxView,
        feature: FeatureView,
        session: Session | None,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_teardown_session(
        self,
        sandbox: SandboxView,
        feature: FeatureView,
        session: Session,
        duration: float,
        error: BaseException | None,
    ) -> None: ...
    def on_feature_activity(
        self,
        sandbox: SandboxView,
        feature: FeatureView,
        name: str,
        session: Session | None,
        duration: float,
        error: BaseException | None,
        args: Mapping[str, Any],
    ) -> None: ...
    def on_feature_housekeep(
        self,
        sandbox: SandboxView | None,
        feature: FeatureView,
        counter: int,
        duration: float,
        error: BaseException | None,
    ) -> None: ...


class HandlerListener:
    """A bus listener that calls one handler back for the events of one environment."""

    def __init__(self, env: EnvironmentView, handler: EventHandler) -> None:
        self._env = env
        self._handler = handler

    def __repr__(self) -> str:
        return f"<HandlerListener {self._env.name} {self._handler!r}>"

    def __call__(self, event: Event) -> None:
        if isinstance(event, SandboxEvent) and event.env is self._env:
            _call(self._handler, event)


def _call(h: EventHandler, event: SandboxEvent) -> None:
    match event:
        case SandboxStatusChanged():
            h.on_sandbox_status_change(
                event.sandbox,
                SandboxStatus(event.from_state),
                SandboxStatus(event.to_state),
                event.span or 0.0,
            )
        case FeatureHookRan():
            _call_feature(h, event)
        case SessionStarted():
            h.on_session_start(event.sandbox, event.session, event.duration, event.error)
        case SessionEnded():
            h.on_session_end(
                event.sandbox, event.session, event.duration, event.span or 0.0, event.error
            )
        case SessionActivity():
            h.on_session_activity(
                event.sandbox, event.name, event.session, event.duration, event.error, event.args
            )
        case SandboxStarted():
            h.on_sandbox_start(event.sandbox, event.duration, event.error)
        case SandboxShutdown():
            h.on_sandbox_shutdown(event.sandbox, event.duration, event.lifetime, event.error)
        case SandboxHousekept():
            h.on_sandbox_housekeep(event.sandbox, event.counter, event.duration, event.error)
        case EnvironmentStatusChanged():
            h.on_environment_status(
                event.env, EnvironmentStatus(event.from_state), EnvironmentStatus(event.to_state)
            )
        case AcquireRejected():
            h.on_acquire_rejected(event.env, event.reason)
        case EnvironmentHousekept():
            h.on_environment_housekeep(
                event.env, event.counter, event.duration, event.error, event.counts
            )
        case EnvironmentStarting():
            h.on_environment_starting(event.env)
        case EnvironmentStarted():
            h.on_environment_start(event.env, event.duration, event.error)
        case EnvironmentShuttingDown():
            h.on_environment_shutting_down(event.env, event.offline_duration)
        case EnvironmentShutdown():
            h.on_environment_shutdown(event.env, event.duration, event.lifetime, event.error)


def _call_feature(h: EventHandler, event: FeatureHookRan) -> None:
    sandbox, feature, duration, error = event.sandbox, event.feature, event.duration, event.error
    match event.hook:
        case "setup":
            h.on_feature_setup(sandbox, feature, duration, error)
        case "teardown":
            h.on_feature_teardown(sandbox, feature, duration, error)
        case "setup_session":
            assert sandbox is not None
            h.on_feature_setup_session(sandbox, feature, event.session, duration, error)
        case "teardown_session":
            assert sandbox is not None
            assert event.session is not None
            h.on_feature_teardown_session(sandbox, feature, event.session, duration, error)
        case "housekeep":
            h.on_feature_housekeep(sandbox, feature, event.counter, duration, error)
