"""The built-in event handler: environment events become bus transitions and metrics.

The bus in turn feeds the structured logs and the API's `/v1/events` stream, so one
handler gives all three views. Session ids appear in events and logs, never in metric
labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from supervisor.observability.metrics import Metrics
from supervisor.sandbox.events import EventHandler
from supervisor.supervision.bus import EventBus
from supervisor.supervision.states import Transition

if TYPE_CHECKING:
    from supervisor.sandbox.environment import Environment
    from supervisor.sandbox.features import Feature
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session
    from supervisor.sandbox.status import EnvironmentStatus, SandboxStatus


def _describe(error: BaseException | None) -> str:
    return "" if error is None else f"{type(error).__name__}: {error}"


class ObservingHandler(EventHandler):
    """Publishes status changes and session ends on the bus; counts what metrics need."""

    def __init__(self, environment: str, bus: EventBus, metrics: Metrics | None) -> None:
        self.environment = environment
        self.bus = bus
        self.metrics = metrics

    def on_environment_status(
        self, env: Environment, old: EnvironmentStatus, new: EnvironmentStatus
    ) -> None:
        reason = "error" if env.error is not None and new.value == "OFFLINE" else new.value.lower()
        self.bus.publish(
            Transition(
                "environment",
                env.name,
                env.backend.name,
                old.value,
                new.value,
                reason,
                detail=_describe(env.error) if new.value == "OFFLINE" else "",
            )
        )

    def on_sandbox_status_change(
        self, sandbox: Sandbox, old: SandboxStatus, new: SandboxStatus, span: float
    ) -> None:
        env = sandbox.env
        self.bus.publish(
            Transition(
                "sandbox",
                sandbox.id,
                env.backend.name,
                old.value,
                new.value,
                "state_error" if sandbox.state_error is not None else "status",
                detail=_describe(sandbox.state_error) if new.value == "OFFLINE" else "",
                environment=env.name,
            )
        )
        if self.metrics is not None:
            self.metrics.sandbox_transitions.labels(env.name, old.value, new.value).inc()

    def on_session_start(
        self, sandbox: Sandbox, session: Session, duration: float, error: BaseException | None
    ) -> None:
        env = sandbox.env
        self.bus.publish(
            Transition(
                "session",
                session.id,
                env.backend.name,
                "",
                "ended" if error is not None else "active",
                "setup_failed" if error is not None else "acquired",
                detail=f"sandbox {sandbox.id}" + (f"; {_describe(error)}" if error else ""),
                environment=env.name,
            )
        )
        if self.metrics is not None:
            if error is None:
                self.metrics.acquire_wait.labels(env.name).observe(session.acquire_wait + duration)
            else:
                self.metrics.sessions_ended.labels(env.name, "failed").inc()

    def on_session_end(
        self,
        sandbox: Sandbox,
        session: Session,
        duration: float,
        lifetime: float,
        error: BaseException | None,
    ) -> None:
        env = sandbox.env
        outcome = "expired" if session.expired else ("failed" if error else "released")
        self.bus.publish(
            Transition(
                "session",
                session.id,
                env.backend.name,
                "active",
                "ended",
                outcome,
                detail=_describe(error),
                environment=env.name,
            )
        )
        if self.metrics is not None:
            self.metrics.sessions_ended.labels(env.name, outcome).inc()
            self.metrics.session_duration.labels(env.name).observe(lifetime)

    def on_acquire_rejected(self, env: Environment, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.acquire_rejections.labels(env.name, reason).inc()

    def on_environment_housekeep(
        self,
        env: Environment,
        counter: int,
        duration: float,
        error: BaseException | None,
        counts: Mapping[str, int],
    ) -> None:
        if self.metrics is not None:
            self.metrics.housekeeping_duration.labels(env.name).observe(duration)

    def _feature(self, feature: Feature, phase: str, error: BaseException | None) -> None:
        if error is not None and self.metrics is not None:
            self.metrics.feature_errors.labels(self.environment, feature.name, phase).inc()

    def on_feature_setup(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        duration: float,
        error: BaseException | None,
    ) -> None:
        self._feature(feature, "setup", error)

    def on_feature_teardown(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        duration: float,
        error: BaseException | None,
    ) -> None:
        self._feature(feature, "teardown", error)

    def on_feature_setup_session(
        self,
        sandbox: Sandbox,
        feature: Feature,
        session: Session | None,
        duration: float,
        error: BaseException | None,
    ) -> None:
        self._feature(feature, "setup_session", error)

    def on_feature_teardown_session(
        self,
        sandbox: Sandbox,
        feature: Feature,
        session: Session,
        duration: float,
        error: BaseException | None,
    ) -> None:
        self._feature(feature, "teardown_session", error)

    def on_feature_housekeep(
        self,
        sandbox: Sandbox | None,
        feature: Feature,
        counter: int,
        duration: float,
        error: BaseException | None,
    ) -> None:
        self._feature(feature, "housekeep", error)
