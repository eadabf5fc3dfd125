"""Every environment of the daemon, and the session operations the API exposes.

The service runs one task per environment, finds sessions by id across environments,
remembers recently ended ones (so a late call gets "expired", 410, rather than "unknown",
404), and makes acquires idempotent: a retried `POST` with the same `Idempotency-Key`
returns the session the first one got (or waits for it), instead of taking a second
sandbox.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog
import trio

from supervisor.config.diff import EnvironmentPlan
from supervisor.config.environment import EnvironmentConfig
from supervisor.errors import (
    ConfigError,
    ConfigProblem,
    EnvironmentNotFoundError,
    EnvironmentOfflineError,
    SandboxStateError,
    SessionExpiredError,
    SessionNotFoundError,
    SessionTeardownError,
)
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.instance import ExecResult
from supervisor.sandbox.session import Session

log = structlog.get_logger("supervisor.sandbox.service")

EnvironmentFactory = Callable[[str, EnvironmentConfig], Environment]
ENDED_MEMORY = 10_000  # ended session ids remembered for 410 answers


class SandboxService:
    """Owns the environments; implements the API's `Sandboxes` protocol."""

    def __init__(self, factory: EnvironmentFactory) -> None:
        self._factory = factory
        self.environments: dict[str, Environment] = {}
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._idempotent: dict[tuple[str, str], trio.Event | str] = {}

    # -- life --------------------------------------------------------------------------

    async def serve(
        self,
        configs: Mapping[str, EnvironmentConfig],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Start every environment (concurrently), report started, run until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._start_all(configs)
            task_status.started()
            await trio.sleep_forever()

    async def _start_all(self, configs: Mapping[str, EnvironmentConfig]) -> None:
        async with trio.open_nursery() as starters:
            for name, config in configs.items():
                starters.start_soon(self._start_one, name, config)

    async def _start_one(self, name: str, config: EnvironmentConfig) -> None:
        assert self._nursery is not None
        try:
            env = self._factory(name, config)
        except Exception as exc:  # a feature plugin that cannot be loaded, say
            log.error("environment_not_built", environment=name, error=str(exc))
            return
        self.environments[name] = env
        await self._nursery.start(self._run_environment, env)

    def check(self, configs: Mapping[str, EnvironmentConfig], plan: EnvironmentPlan) -> None:
        """Build (and discard) what a reload would create, before anything is changed.

        Raises:
            ConfigError: an environment cannot be built (its features, typically).
        """
        problems = []
        for name in (*plan.added, *plan.recreated):
            try:
                self._factory(name, configs[name])
            except Exception as exc:
                problems.append(ConfigProblem(f"environments.{name}", str(exc)))
        if problems:
            raise ConfigError("config", problems)

    async def _run_environment(
        self, env: Environment, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._scopes[env.name] = scope
            async with trio.open_nursery() as nursery:
                try:
                    await env.start(nursery)
                except Exception as exc:
                    log.error("environment_start_failed", environment=env.name, error=str(exc))
                    task_status.started()
                    return
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    await env.shutdown()
                    nursery.cancel_scope.cancel()

    async def stop(self) -> None:
        """Shut every environment down concurrently."""
        async with trio.open_nursery() as nursery:
            for env in self.environments.values():
                nursery.start_soon(env.shutdown)
        for scope in self._scopes.values():
            scope.cancel()

    async def apply(self, configs: Mapping[str, EnvironmentConfig], plan: EnvironmentPlan) -> None:
        """Make the environments match a reloaded config: resize in place where possible."""
        doomed = [*plan.removed, *plan.recreated]
        async with trio.open_nursery() as nursery:
            for name in doomed:
                if name in self.environments:
                    nursery.start_soon(self.environments[name].shutdown)
        for name in doomed:
            self.environments.pop(name, None)
            if (scope := self._scopes.pop(name, None)) is not None:
                scope.cancel()
        missing = [name for name in plan.resized if name not in self.environments]
        for name in plan.resized:
            if name in self.environments:
                self.environments[name].resize(configs[name])
        # An environment that could not be built before (a plugin that failed to load)
        # gets another chance with the new config.
        await self._start_all({n: configs[n] for n in (*plan.added, *plan.recreated, *missing)})

    # -- queries -----------------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        return [env.stats() for env in self.environments.values()]

    def environment(self, name: str) -> Environment:
        """The environment `name`.

        Raises:
            EnvironmentNotFoundError: no such environment (or it could not be built).
        """
        try:
            return self.environments[name]
        except KeyError:
            raise EnvironmentNotFoundError(f"no environment named {name!r}") from None

    def session(self, session_id: str) -> Session:
        """The live session `session_id`.

        Raises:
            SessionExpiredError: it was ended by the daemon (TTL or lease) or released.
            SessionNotFoundError: no such session.
        """
        for env in self.environments.values():
            if (session := env.find_session(session_id)) is not None:
                if session.ended:
                    break
                return session
        reason = self._ended.get(session_id)
        if reason == "expired":
            raise SessionExpiredError(f"session {session_id} expired and was ended by the daemon")
        if reason is not None:
            raise SessionExpiredError(f"session {session_id} has ended ({reason})")
        raise SessionNotFoundError(f"no session {session_id!r}")

    def _remember(self, session: Session) -> None:
        self._ended[session.id] = session.end_reason or "released"
        while len(self._ended) > ENDED_MEMORY:
            self._ended.popitem(last=False)

    # -- operations --------------------------------------------------------------------

    async def acquire(
        self,
        env_name: str,
        *,
        ttl: float | None = None,
        wait: float | None = None,
        labels: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Session, bool]:
        """A new session in `env_name` (and True), or the one an earlier call with the same
        idempotency key got (and False).

        Raises:
            EnvironmentNotFoundError: no such environment.
            AcquireError: overloaded, in an outage or offline.
        """
        env = self.environment(env_name)
        key = (env_name, idempotency_key) if idempotency_key else None
        if key is not None:
            while (known := self._idempotent.get(key)) is not None:
                if isinstance(known, str):
                    with contextlib.suppress(SessionExpiredError, SessionNotFoundError):
                        return self.session(known), False
                    del self._idempotent[key]
                    break
                await known.wait()  # the first call is still acquiring
            pending = trio.Event()
            self._idempotent[key] = pending
        try:
            session = await env.open_session(
                ttl=ttl, lease=env.settings.lease, labels=labels, timeout=wait
            )
        except BaseException:
            if key is not None:
                self._idempotent.pop(key, None)
            raise
        finally:
            if key is not None:
                pending.set()
        if key is not None:
            self._idempotent[key] = session.id
        self._nursery_watch(session, key)
        return session, True

    def _nursery_watch(self, session: Session, key: tuple[str, str] | None) -> None:
        """Remember the session's end (for 410s) and drop its idempotency key then."""

        async def watch() -> None:
            await session.ended_event.wait()
            self._remember(session)
            if key is not None and self._idempotent.get(key) == session.id:
                del self._idempotent[key]

        assert self._nursery is not None
        self._nursery.start_soon(watch)

    def heartbeat(self, session_id: str) -> Session:
        session = self.session(session_id)
        session.heartbeat()
        return session

    async def exec(
        self,
        session_id: str,
        *,
        command: Sequence[str] | None = None,
        script: str | None = None,
        timeout: float | None = None,
    ) -> ExecResult:
        """Run a command or script in the session's sandbox.

        A state error ends the session and shuts the sandbox down (rule 6) before it is
        raised: the client must acquire a new session.
        """
        session = self.session(session_id)
        env = self.environments.get(session.environment)
        if env is None:
            raise EnvironmentOfflineError(f"environment {session.environment} is gone")
        try:
            if command is not None:
                return await session.exec(command, timeout=timeout)
            assert script is not None
            return await session.run_script(script, timeout=timeout)
        except SandboxStateError:
            with trio.CancelScope(shield=True), contextlib.suppress(SessionTeardownError):
                await env.close_session(session)
            raise

    async def release(self, session_id: str) -> SessionTeardownError | None:
        """End the session; returns (not raises) a teardown failure, which ended it anyway.

        Raises:
            SessionExpiredError: the daemon had already ended it.
            SessionNotFoundError: no such session.
        """
        try:
            session = self.session(session_id)
        except SessionExpiredError:
            if self._ended.get(session_id) in ("released", "setup_failed"):
                return None  # releasing twice is fine
            raise
        env = self.environments.get(session.environment)
        if env is None:
            raise EnvironmentOfflineError(f"environment {session.environment} is gone")
        try:
            with trio.CancelScope(shield=True):
                await env.close_session(session)
        except SessionTeardownError as exc:
            return exc
        return None
