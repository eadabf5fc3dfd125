"""`kind = "deephaven-enterprise"`: an Enterprise (Core+) session factory, and its sessions.

Why it is built this way:
- The Core+ client never runs in the daemon. Like the community kind, each resource has
  its own helper process (`launchers/deephaven/enterprise_worker.py`, driven through
  `launchers.deephaven.client.DeephavenClient`): a Core+ session is a pydeephaven
  session, with the same segfault and hang hazards, and the client pins its own
  pydeephaven, so the helper may run in another venv (`python_venv`). Threads would
  share both hazards with the daemon.
- A factory (`enterprise:factory:SYSTEM`) is a logged-in `SessionManager`; its liveness is
  `SessionManager.ping()` under `liveness.timeout` (5 s by default).
- A session (`enterprise:SYSTEM:NAME`) depends on its factory (config adds it to
  `depends_on`), so it starts only once the system answered and took the credentials. It
  logs in with the factory's settings in its own helper instead of borrowing the
  factory's manager: a crash or hang of one session then costs that session alone a
  restart, never the factory or its siblings. Its liveness is a real RPC on the session.
- A session that creates a worker owns it: closing the session deletes the worker's
  persistent query; if the helper dies instead, the server deletes it after
  `auto_delete_timeout`.
- Secrets: the password goes to the helper over its private socket, never argv, the
  environment or `detail`; the variable `password_env` names is removed from the
  helper's environment, and helper output is redacted.
- A helper that cannot start (no client in `python_venv`, say) fails the start with one
  line: the helper says what to install (MISCONFIGURED, so FATAL and retried after
  `fatal_retry`), and a helper that dies instead is a plain start failure, backed off.
"""

from __future__ import annotations

from typing import Any

import structlog

from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.errors import DeephavenClientError, HelperGoneError
from supervisor.launchers.deephaven.client import (
    DeephavenClient,
    lost_session_result,
)
from supervisor.launchers.deephaven.enterprise import login_request, open_logged_in
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.policy import Termination
from supervisor.supervision.resource import CheckResult, CheckSettings, Handle, ResourceBase
from supervisor.supervision.states import Liveness

KIND = "deephaven-enterprise"
# What a new worker's session needs beyond the worker's own start-up.
_SESSION_MARGIN = 15.0


class EnterpriseHandle:
    """A running factory or session: its client helper, and a session's query serial."""

    def __init__(self, client: DeephavenClient, serial: int | None = None) -> None:
        self.client = client
        self.serial = serial

    @property
    def pid(self) -> int | None:
        return self.client.pid

    @property
    def ident(self) -> str | None:
        return None if self.serial is None else f"pq:{self.serial}"

    async def wait(self) -> Termination:
        return await self.client.wait_ended()

    async def stop(self, timeout: float) -> Termination:
        await self.client.close(timeout)  # closes the session, deleting a worker it made
        return Termination("exit_code", "session closed", exit_code=0)

    def kill(self) -> None:
        self.client.kill()


class _EnterpriseResource(ResourceBase):
    """What factories and sessions share: the helper, its calls and its checks."""

    kind = KIND

    def __init__(
        self,
        name: str,
        config: DeephavenEnterpriseConfig,
        identity: FullName,
        launcher: LocalLauncher,
    ) -> None:
        self.name = name
        self.config = config
        self.identity = identity
        self._launcher = launcher
        self._handle: EnterpriseHandle | None = None
        self._log = structlog.get_logger("supervisor.deephaven").bind(
            resource=name, deephaven=str(identity)
        )
        self._output_log = structlog.get_logger("supervisor.output").bind(
            resource=name, deephaven=str(identity), stream_of="deephaven_client"
        )

    def reconfigure(self, config: DeephavenEnterpriseConfig) -> None:
        """Apply settings that need no new session (liveness, timeouts, restart)."""
        self.config = config

    @property
    def full_name(self) -> str:
        return str(self.identity)

    @property
    def check_settings(self) -> CheckSettings | None:
        live = self.config.liveness
        return CheckSettings(live.interval, live.timeout, live.failures, reason="liveness")

    async def ready(self, handle: Handle) -> None:
        return None  # start() returns only once logged in (and connected)

    def is_success(self, term: Termination) -> bool:
        return False  # a factory or a session never ends by doing its job

    @property
    def client(self) -> DeephavenClient | None:
        return self._handle.client if self._handle is not None else None

    async def _logged_in_client(self, factory: EnterpriseFactoryResource) -> DeephavenClient:
        """A new helper, logged in to `factory`'s system (see `open_logged_in`)."""
        return await open_logged_in(
            self._launcher,
            factory.config,
            f"supervisor-daemon {factory.identity}",
            self._output_log,
        )

    async def _probe(self, handle: Handle, op: str, **fields: object) -> CheckResult:
        assert isinstance(handle, EnterpriseHandle)
        client = handle.client
        if client.busy:
            return CheckResult(Liveness.ONLINE, "busy: a call is in progress")
        timeout = self.config.liveness.timeout
        try:
            # The gRPC deadline is a little shorter than ours, so a slow server gets a
            # clean DEADLINE_EXCEEDED and the helper survives it.
            await client.call(op, timeout, rpc_timeout=max(timeout * 0.8, timeout - 1.0), **fields)
        except DeephavenClientError as exc:
            return lost_session_result(exc)
        return CheckResult(Liveness.ONLINE)


class EnterpriseFactoryResource(_EnterpriseResource):
    """The session factory of one Enterprise system: a logged-in `SessionManager`."""

    def __init__(
        self, name: str, config: DeephavenEnterpriseConfig, launcher: LocalLauncher
    ) -> None:
        if not config.is_factory:
            raise ValueError(f"{name} is a session, not a factory")
        super().__init__(name, config, FullName.enterprise_factory(config.system or name), launcher)

    @property
    def system(self) -> str:
        return self.identity.name

    async def start(self) -> Handle:
        client = await self._logged_in_client(self)
        self._handle = EnterpriseHandle(client)
        self._log.info("deephaven_factory_logged_in", pid=client.pid)
        return self._handle

    async def check(self, handle: Handle) -> CheckResult:
        return await self._probe(handle, "ping")

    async def login_request(self) -> dict[str, Any]:
        """The helper's `login` request; the password is read now, never stored."""
        return await login_request(self.config, f"supervisor-daemon {self.identity}")


class EnterpriseSessionResource(_EnterpriseResource):
    """A session of an Enterprise system: to a persistent query, or to a new worker."""

    def __init__(
        self,
        name: str,
        config: DeephavenEnterpriseConfig,
        factory: EnterpriseFactoryResource,
        launcher: LocalLauncher,
    ) -> None:
        if config.is_factory or config.factory != factory.name:
            raise ValueError(f"{name} is not a session of factory {factory.name}")
        super().__init__(name, config, FullName.enterprise(factory.system, name), launcher)
        self.factory = factory

    async def start(self) -> Handle:
        config = self.config
        client = await self._logged_in_client(self.factory)
        op, fields = self._session_request()
        # The supervisor bounds the whole start by start_timeout; the call's deadline
        # only makes sure a hung helper is killed rather than left behind.
        result = await client.start_call(op, config.start_timeout, **fields)
        serial = result.get("serial") if isinstance(result, dict) else None
        self._handle = EnterpriseHandle(client, serial if isinstance(serial, int) else None)
        self._log.info("deephaven_session_connected", pid=client.pid, serial=serial)
        return self._handle

    async def check(self, handle: Handle) -> CheckResult:
        return await self._probe(handle, "session_ping")

    def _session_request(self) -> tuple[str, dict[str, object]]:
        """The helper op that opens the session, and its fields."""
        config = self.config
        if config.pq_name is not None:
            return "connect_pq", {"pq_name": config.pq_name}
        return "new_worker", {
            "name": f"supervisor-{self.name}",
            "heap_gb": config.heap_gb,
            "jvm_args": config.jvm_args,
            "auto_delete_timeout": config.auto_delete_timeout,
            "programming_language": config.programming_language,
            # The worker's own start-up gets what the session does not need.
            "worker_timeout": max(config.start_timeout - _SESSION_MARGIN, 1.0),
        }

    async def run_script(self, script: str, timeout: float) -> None:
        """Run `script` in the session's console."""
        handle = self._handle
        if handle is None or not handle.client.alive:
            raise HelperGoneError(f"{self.name} has no running session")
        await handle.client.call("run_script", timeout, script=script)
