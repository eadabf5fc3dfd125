"""`backend = "deephaven-enterprise"`: a sandbox is one Enterprise (Core+) worker.

Why it is built this way:
- A worker is made through a configured factory's settings (`[deephaven_enterprise]
  factory = "NAME"`): each sandbox logs in in its own client helper
  (`launchers.deephaven.enterprise`), as a configured Enterprise session does, so a crash
  or hang costs that sandbox alone. The helper's session owns the worker.
- One session per worker (the config sets `max_sessions_per_sandbox = 1`): a worker's
  console cannot be wiped as reliably as a server we launched, and a fresh worker is what
  deephaven-mcp's `session_enterprise_create` promises. Release shuts the sandbox down,
  which deletes the worker's persistent query: by closing the helper's session, or, when
  the helper is gone, by a new helper deleting the serial. `max_size` caps the workers.
- Workers are named `sv-<instance>-<environment>-<run>-...`: at start-up (and, if the
  system was down then, at the first bring-up that logs in) the queries with this daemon's
  and environment's prefix but another run's token are deleted, so a SIGKILLed daemon's
  workers do not wait for their `auto_delete_timeout`, the server's own last resort.
- Scripts run as in a `deephaven` sandbox: Python in the worker's console, what they
  printed captured (`launchers.deephaven.script_capture`), an exception is exit 1.
  A script that overruns its timeout kills our helper; the sandbox is then broken and
  shut down (its worker deleted), since the session it held is gone.
"""

from __future__ import annotations

import re
import secrets
from typing import TYPE_CHECKING, Any

import structlog
import trio

from supervisor.config.deephaven import parse_heap
from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.config.environment import DeephavenEnterpriseSandboxConfig
from supervisor.config.types import MIB
from supervisor.errors import (
    DeephavenClientError,
    HelperGoneError,
    MisconfiguredError,
    SandboxStateError,
    StartError,
    UnauthorizedError,
)
from supervisor.launchers.deephaven.client import DeephavenClient
from supervisor.launchers.deephaven.enterprise import open_logged_in
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.backends import ExecResult
from supervisor.sandbox.backends.deephaven import (
    ConsoleInstance,
    refuse_shaped,
    run_console_script,
)
from supervisor.sandbox.backends.docker import SandboxConfigError
from supervisor.sandbox.instance import PLAIN, ExecOptions

if TYPE_CHECKING:
    pass

# What a new worker's session needs beyond the worker's own start-up.
_SESSION_MARGIN = 15.0
_CLEANUP_TIMEOUT = 30.0
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def worker_token(name: str) -> str:
    """`name` (a config Name: letters, digits, `_`, `.`, `-`) in a worker name's alphabet,
    one to one: `_` becomes `__` and `.` becomes `_d`, so `a.b`, `a-b` and `a_b` stay
    three environments, each deleting only its own workers at start-up."""
    return name.replace("_", "__").replace(".", "_d")


log = structlog.get_logger("supervisor.sandbox.deephaven_enterprise")


class EnterpriseInstance(ConsoleInstance):
    """One worker, and the helper whose session owns it."""

    what = "enterprise sandbox"
    backing = "a worker"

    def __init__(
        self, backend: DeephavenEnterpriseBackend, client: DeephavenClient, name: str, serial: int
    ) -> None:
        self._backend = backend
        self.client = client
        self.name = name
        self.serial = serial
        self._stopping = False
        self._stopped = False

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        """Run Python in the worker (see `run_console_script`)."""
        refuse_shaped(options)

        async def client() -> DeephavenClient:
            return self.client

        return await run_console_script(
            self, client, script, timeout=timeout, output_limit=self._backend.output_limit
        )

    async def check(self) -> None:
        """A real RPC on the worker's session (unless a script is running)."""
        client = self.client
        if client.busy:
            return
        timeout = self._backend.check_timeout
        try:
            await client.call(
                "session_ping", timeout, rpc_timeout=max(timeout * 0.8, timeout - 1.0)
            )
        except (DeephavenClientError, HelperGoneError) as exc:
            raise self.broken(exc) from exc

    async def wait_dead(self) -> str:
        term = await self.client.process.wait()
        if self._stopping:
            await trio.sleep_forever()  # our own stop is no death
        return f"client helper {term.detail}"

    async def stop(self) -> None:
        """Delete the worker: close the session that owns it, or delete it by serial."""
        if self._stopped:
            return
        self._stopping = True
        client = self.client
        if client.alive and not client.busy:
            await client.close(self._backend.stop_timeout)  # deletes the worker it made
        else:
            client.kill()
            await self._backend.delete_workers(self.name, serial=self.serial)
        self._stopped = True
        log.info("enterprise_worker_deleted", worker=self.name, serial=self.serial)

    def connection(self) -> dict[str, Any]:
        return {
            "factory": self._backend.config.factory,
            "worker": self.name,
            "serial": self.serial,
        }


class DeephavenEnterpriseBackend:
    """Creates one Enterprise worker per sandbox through `factory`'s login."""

    name = "deephaven-enterprise"

    def __init__(
        self,
        launcher: LocalLauncher,
        config: DeephavenEnterpriseSandboxConfig,
        factory: DeephavenEnterpriseConfig | None,
        *,
        environment: str,
        instance: str,
        output_limit: int = MIB,
        stop_timeout: float = 10.0,
        check_timeout: float = 10.0,
    ) -> None:
        self.launcher = launcher
        self.config = config
        self.factory = factory
        self.environment = environment
        self.output_limit = output_limit
        self.stop_timeout = stop_timeout
        self.check_timeout = check_timeout
        # "." cannot occur in the encoded name: environment "a" never matches "a-b".
        self.prefix = f"sv-{_UNSAFE.sub('-', instance)[:12]}-{worker_token(environment)}."
        self.run = secrets.token_hex(3)  # tells this run's workers from a previous run's
        self._reaped = False
        self._reap_lock = trio.Lock()

    async def reset(self) -> None:
        """Delete the workers a previous run of this daemon left (best effort)."""
        try:
            with trio.fail_after(self._login_timeout() + _CLEANUP_TIMEOUT):
                client = await self._login()
                try:
                    await self._reap(client)
                finally:
                    await client.close(self.stop_timeout)
        except (StartError, DeephavenClientError, HelperGoneError, trio.TooSlowError) as exc:
            # Not fatal: retried at the first bring-up that logs in.
            log.warning("enterprise_reap_deferred", environment=self.environment, error=str(exc))

    async def create(self, sandbox_id: str) -> EnterpriseInstance:
        """Log in and create a worker, within `start_timeout`; leave nothing on failure.

        Raises:
            SandboxStateError: the system did not answer, or the worker did not start.
            SandboxConfigError: the settings cannot work (credentials, factory, venv).
        """
        what = f"sandbox {sandbox_id}"
        slot = _UNSAFE.sub("-", sandbox_id.rpartition("/")[2])
        name = f"{self.prefix}{self.run}-{slot}-{secrets.token_hex(3)}"
        timeout = self.config.start_timeout
        client: DeephavenClient | None = None
        asked = False
        try:
            with trio.fail_after(timeout):
                client = await self._login()
                await self._reap(client)
                asked = True
                result = await client.call(
                    "new_worker",
                    timeout,
                    name=name,
                    exact_name=True,
                    heap_gb=parse_heap(self.config.heap) / 1024,
                    jvm_args=self.config.jvm_args,
                    auto_delete_timeout=int(self.config.auto_delete_timeout),
                    programming_language="python",
                    worker_timeout=max(timeout - _SESSION_MARGIN, 1.0),
                )
        except BaseException as exc:
            if client is not None:
                client.kill()
            if asked:  # the worker may exist without our knowing its serial
                with trio.CancelScope(shield=True):
                    await self.delete_workers(name)
            if isinstance(exc, UnauthorizedError | MisconfiguredError):
                raise SandboxConfigError(f"{what}: {exc}") from exc
            if isinstance(exc, trio.TooSlowError):
                raise SandboxStateError(f"{what}: no worker within {timeout:g}s") from exc
            if isinstance(exc, StartError | DeephavenClientError | HelperGoneError):
                raise SandboxStateError(f"{what}: {exc}") from exc
            raise
        assert client is not None
        serial = int(result["serial"]) if isinstance(result, dict) else -1
        log.info("enterprise_worker_created", sandbox=sandbox_id, worker=name, serial=serial)
        return EnterpriseInstance(self, client, name, serial)

    async def delete_workers(self, name: str, *, serial: int | None = None) -> None:
        """Best effort, through a new helper: delete `serial`, or the queries named `name`."""
        try:
            with trio.fail_after(self._login_timeout() + _CLEANUP_TIMEOUT):
                client = await self._login()
                try:
                    serials = [serial] if serial is not None and serial >= 0 else None
                    if serials is None:
                        found = await client.call("list_workers", _CLEANUP_TIMEOUT, prefix=name)
                        serials = (
                            [int(w["serial"]) for w in found] if isinstance(found, list) else []
                        )
                    for each in serials:
                        await client.call("delete_worker", _CLEANUP_TIMEOUT, serial=each)
                finally:
                    await client.close(self.stop_timeout)
        except (StartError, DeephavenClientError, HelperGoneError, trio.TooSlowError) as exc:
            # Its auto_delete_timeout is the server's own last resort.
            log.warning("enterprise_worker_not_deleted", worker=name, error=str(exc))

    async def _reap(self, client: DeephavenClient) -> None:
        """Once: delete this environment's workers of other runs (a killed daemon's)."""
        async with self._reap_lock:
            if self._reaped:
                return
            found = await client.call("list_workers", _CLEANUP_TIMEOUT, prefix=self.prefix)
            ours = f"{self.prefix}{self.run}-"
            left = (
                [w for w in found if isinstance(w, dict) and not str(w["name"]).startswith(ours)]
                if isinstance(found, list)
                else []
            )
            for worker in left:
                await client.call("delete_worker", _CLEANUP_TIMEOUT, serial=int(worker["serial"]))
                log.info(
                    "enterprise_worker_reaped",
                    environment=self.environment,
                    worker=worker["name"],
                    serial=worker["serial"],
                )
            self._reaped = True

    async def _login(self) -> DeephavenClient:
        if self.factory is None:
            raise MisconfiguredError(
                f"factory {self.config.factory!r} is not a deephaven-enterprise factory"
            )
        return await open_logged_in(
            self.launcher, self.factory, f"supervisor-daemon {self.environment}"
        )

    def _login_timeout(self) -> float:
        return self.factory.connection_timeout + 15.0 if self.factory is not None else 15.0
