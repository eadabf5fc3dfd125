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
from collections.abc import Awaitable, Mapping, Sequence
from typing import IO, Any, TypeVar

import structlog
import trio

from supervisor.config.diff import EnvironmentPlan
from supervisor.config.environment import EnvironmentConfig
from supervisor.config.types import RestartConfig
from supervisor.errors import (
    ConfigError,
    ConfigProblem,
    ConflictError,
    DaemonStoppingError,
    EnvironmentNotFoundError,
    EnvironmentOfflineError,
    SandboxStateError,
    SessionExpiredError,
    SessionLimitError,
    SessionNotFoundError,
    SessionTeardownError,
)
from supervisor.sandbox.background import Command, Commands
from supervisor.sandbox.environment import Environment
from supervisor.sandbox.files import Download, Listing
from supervisor.sandbox.instance import ExecOptions, ExecResult, OutputSink
from supervisor.sandbox.keeper import EnvironmentFactory, Keeper
from supervisor.sandbox.session import Session
from supervisor.supervision.bus import EventBus

log = structlog.get_logger("supervisor.sandbox.service")

T = TypeVar("T")
ENDED_MEMORY = 10_000  # ended session ids remembered for 410 answers


class SandboxService:
    """Owns the environments (one `Keeper` each); implements the API's `Sandboxes`."""

    def __init__(self, factory: EnvironmentFactory, restart: RestartConfig, bus: EventBus) -> None:
        self._factory = factory
        self._restart = restart
        self._bus = bus
        self._keepers: dict[str, Keeper] = {}
        self._stopping = False
        self._scopes: dict[str, trio.CancelScope] = {}
        self._nursery: trio.Nursery | None = None
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._idempotent: dict[tuple[str, str], trio.Event | str] = {}
        self._requests: dict[tuple[str, str], object] = {}  # what each key was first used for
        self._commands: dict[str, Commands] = {}  # background commands, by session id

    @property
    def environments(self) -> dict[str, Environment]:
        """The current environment of each keeper that has one."""
        return {name: k.env for name, k in self._keepers.items() if k.env is not None}

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
        keeper = Keeper(name, config, self._factory, restart=self._restart, bus=self._bus)
        self._keepers[name] = keeper
        await self._nursery.start(self._keep, keeper)

    async def _keep(
        self, keeper: Keeper, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.CancelScope() as scope:
            self._scopes[keeper.name] = scope
            await keeper.run(task_status=task_status)

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

    def restart(self, name: str) -> dict[str, Any]:
        """Rebuild environment `name` now (its sessions end); returns its stats.

        Raises:
            EnvironmentNotFoundError: no such environment.
        """
        if self._stopping:
            raise DaemonStoppingError("the daemon is stopping")
        keeper = self._keeper(name)
        keeper.restart()
        log.info("operator_command", environment=name, action="restart")
        return keeper.stats()

    async def stop(self) -> None:
        """Shut every environment down concurrently."""
        self._stopping = True
        async with trio.open_nursery() as nursery:
            for keeper in self._keepers.values():
                nursery.start_soon(keeper.stop)
        for scope in self._scopes.values():
            scope.cancel()

    async def apply(
        self,
        configs: Mapping[str, EnvironmentConfig],
        plan: EnvironmentPlan,
        restart: RestartConfig | None = None,
    ) -> None:
        """Make the environments match a reloaded config: resize in place where possible."""
        if restart is not None:
            self._restart = restart
            for keeper in self._keepers.values():
                keeper.set_restart(restart)
        doomed = [n for n in (*plan.removed, *plan.recreated) if n in self._keepers]
        async with trio.open_nursery() as nursery:
            for name in doomed:
                nursery.start_soon(self._keepers[name].stop)
        for name in doomed:
            del self._keepers[name]
            if (scope := self._scopes.pop(name, None)) is not None:
                scope.cancel()
        for name in plan.resized:
            if name in self._keepers:
                self._keepers[name].resize(configs[name])
        await self._start_all({n: configs[n] for n in (*plan.added, *plan.recreated)})

    # -- queries -----------------------------------------------------------------------

    def stats(self) -> list[dict[str, Any]]:
        return [keeper.stats() for keeper in self._keepers.values()]

    def _keeper(self, name: str) -> Keeper:
        try:
            return self._keepers[name]
        except KeyError:
            raise EnvironmentNotFoundError(f"no environment named {name[:100]!r}") from None

    def environment(self, name: str) -> Keeper:
        """Environment `name` as its keeper sees it (stats, status between starts).

        Raises:
            EnvironmentNotFoundError: no such environment.
        """
        return self._keeper(name)

    def sessions(self, name: str) -> list[Session]:
        """Environment `name`'s sessions in progress (EnvironmentNotFoundError)."""
        env = self._keeper(name).env
        return [] if env is None else env.sessions()

    def _current(self, name: str) -> Environment:
        env = self._keeper(name).env
        if env is None:
            raise EnvironmentOfflineError(f"environment {name} could not be built")
        return env

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
            SessionLimitError: `ttl` is over the environment's `session_ttl`.
            ConflictError: the idempotency key was used for a different request.
            AcquireError: overloaded, in an outage or offline.
        """
        env = self._current(env_name)
        if ttl is not None and ttl > env.settings.session_ttl:
            raise SessionLimitError(
                f"ttl {ttl:g}s is over environment {env_name}'s session_ttl "
                f"({env.settings.session_ttl:g}s)"
            )
        key = (env_name, idempotency_key) if idempotency_key else None
        if key is not None:
            request = (ttl, wait, tuple(sorted((labels or {}).items())))
            if self._requests.setdefault(key, request) != request:
                raise ConflictError(
                    "this Idempotency-Key was used for a different request; use a new key"
                )
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
                self._requests.pop(key, None)
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
            self._commands.pop(session.id, None)
            if key is not None and self._idempotent.get(key) == session.id:
                del self._idempotent[key]
                self._requests.pop(key, None)

        assert self._nursery is not None
        self._nursery.start_soon(watch)

    def heartbeat(self, session_id: str) -> Session:
        session = self.session(session_id)
        session.heartbeat()
        return session

    def _live(self, session_id: str) -> tuple[Session, Environment]:
        session = self.session(session_id)
        env = self.environments.get(session.environment)
        if env is None:
            raise EnvironmentOfflineError(f"environment {session.environment} is gone")
        return session, env

    async def _client_work(self, session: Session, env: Environment, work: Awaitable[T]) -> T:
        """Await `work`; a state error ends the session and shuts the sandbox down (rule 6)
        before it is raised: the client must acquire a new session."""
        try:
            return await work
        except SandboxStateError:
            with trio.CancelScope(shield=True), contextlib.suppress(SessionTeardownError):
                await env.close_session(session)
            raise

    async def exec(
        self,
        session_id: str,
        *,
        command: Sequence[str] | None = None,
        script: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
        output: OutputSink | None = None,
        options: ExecOptions | None = None,
    ) -> ExecResult:
        """Run a command or script in the session's sandbox; with `output`, its output
        goes there as it comes (`ExecOptions`).

        A state error ends the session and shuts the sandbox down (rule 6) before it is
        raised: the client must acquire a new session.
        """
        if options is None:
            options = ExecOptions(env=env, cwd=cwd, stdin=stdin, output=output)
        session, home = self._live(session_id)
        if command is not None:
            work = session.exec(command, timeout=timeout, options=options)
        else:
            assert script is not None
            work = session.run_script(script, timeout=timeout, options=options)
        return await self._client_work(session, home, work)

    def file_limit(self, session_id: str) -> int | None:
        """The most bytes a file transfer of the session may carry (None: no such session)."""
        with contextlib.suppress(
            SessionExpiredError, SessionNotFoundError, EnvironmentOfflineError
        ):
            return self._live(session_id)[1].settings.file_limit
        return None

    async def put_files(self, session_id: str, path: str, data: IO[bytes], *, tar: bool) -> None:
        """Write a file as `path`, or extract a tar under the directory `path`."""
        session, env = self._live(session_id)
        limit = env.settings.file_limit
        await self._client_work(session, env, session.put_files(path, data, tar=tar, limit=limit))

    async def get_files(self, session_id: str, path: str) -> Download:
        """A file's bytes, or a directory's tar, within the environment's `file_limit`."""
        session, env = self._live(session_id)
        limit = env.settings.file_limit
        return await self._client_work(session, env, session.get_files(path, limit=limit))

    async def list_files(self, session_id: str, path: str) -> Listing:
        session, env = self._live(session_id)
        return await self._client_work(session, env, session.list_files(path))

    def start_command(
        self,
        session_id: str,
        *,
        command: Sequence[str] | None = None,
        script: str | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        stdin: bytes | None = None,
    ) -> Command:
        """Start a background command for the session; it ends with the session at latest.

        Raises:
            ConflictError: the session has run its quota of background commands.
        """
        session = self.session(session_id)
        commands = self._commands.setdefault(session.id, Commands())
        what: dict[str, Any] = {"command": list(command)} if command is not None else {}
        started = commands.add(what or {"script": script})
        options = started.options(ExecOptions(env=env, cwd=cwd, stdin=stdin))

        async def run() -> None:
            result: ExecResult | None = None
            error: Exception | None = SessionExpiredError(f"session {session.id} ended")
            try:
                result = await self.exec(
                    session.id, command=command, script=script, timeout=timeout,
                    options=options,
                )  # fmt: skip
                error = None
            except Exception as exc:
                error = exc
            finally:
                started.finish(result, error)

        assert self._nursery is not None
        self._nursery.start_soon(run)
        return started

    def commands(self, session_id: str) -> Commands:
        """The session's background commands."""
        session = self.session(session_id)
        return self._commands.get(session.id) or Commands()

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
