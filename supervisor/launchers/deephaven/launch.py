"""A launched Deephaven server and our session on it, for a resource or a sandbox alike.

Why it is built this way:
- `kind = "deephaven"` with `launch` set and `backend = "deephaven"` sandboxes both launch
  through `DeephavenLauncher`, so neither imports the other. A server is a local child
  (`server.spawn_server`: the PSK over a private socket) or a container
  (`container.run_server_container`: the PSK in a read-only `deephaven.prop`).
- The handle is the server plus our client helper (`client`). The server's exit ends the
  handle at once (pushed by its pidfd or the container's `die` event, not seen at the
  next check). A session that dies under a live server, or a helper that crashes, is
  recreated inside the check without touching the server; only a server that stops
  answering (frozen, overloaded) fails the check.
- A local start waits for `Server started on port N` in its output, then for an
  authenticated call to succeed. A container's port answers before its server does, so
  readiness retries the connect, waiting by the restart policy's `backoff_delay` (a fixed
  `CONNECT_RETRY`); the caller bounds the whole wait.
- With `port = "auto"`, a bind failure (someone took the port between our pick and the
  server's bind) retries at once on a new port within the start, up to `PORT_ATTEMPTS`.
- Children never see the variable the token came from (`token_env`), and every line of
  their output is redacted; `detail` strings never hold a token.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import structlog
import trio

from supervisor.config.deephaven import PSK_HANDLER, DeephavenConfig
from supervisor.config.types import BackoffConfig
from supervisor.errors import DeephavenClientError, HelperGoneError, MisconfiguredError, StartError
from supervisor.launchers.deephaven.client import (
    ConnectSpec,
    DeephavenClient,
    describe,
    liveness_of,
    open_client,
    start_error,
)
from supervisor.launchers.deephaven.container import CONTAINER_PORT, run_server_container
from supervisor.launchers.deephaven.output import (
    LineKeeper,
    Redactor,
    ServerOutput,
    wait_started,
)
from supervisor.launchers.deephaven.server import (
    ServerSpec,
    pick_free_port,
    python_for,
    python_launch_problem,
    spawn_server,
)
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher, scrubbed_environment
from supervisor.supervision.policy import Termination, backoff_delay
from supervisor.supervision.resource import CheckResult
from supervisor.supervision.states import Liveness

PORT_ATTEMPTS = 5
# Every 0.25 s while the server does not answer yet (the first retry waits too: `ready`).
CONNECT_RETRY = BackoffConfig(initial=0.25, factor=1.0, max=0.25, jitter=0.0)


class ServerHandle(Protocol):
    """A launched server: a local process or a container."""

    @property
    def pid(self) -> int | None: ...
    @property
    def ident(self) -> str | None: ...
    async def wait(self) -> Termination: ...
    async def stop(self, timeout: float) -> Termination: ...
    def kill(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DeephavenCredentials:
    """What a client needs to open its own session; `token` never appears in a repr."""

    host: str
    port: int
    auth_type: str
    token: str = field(repr=False)

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "auth_type": self.auth_type,
            "token": self.token,
        }


class DeephavenHandle:
    """A running session: the client helper, and the server process when we launched it."""

    def __init__(
        self, spec: ConnectSpec, client: DeephavenClient, server: ServerHandle | None = None
    ) -> None:
        self.spec = spec
        self.client = client
        self.server = server
        self.server_exited = False
        self.stopped = False
        # Why the credentials are not handed out (None: they are): until the server has
        # taken them, and again while the last check failed.
        self._withheld: str | None = "not ready yet"

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else self.client.pid

    @property
    def ident(self) -> str | None:
        return self.server.ident if self.server is not None else None

    @property
    def endpoint(self) -> str:
        return f"{self.spec.host}:{self.spec.port}"

    @property
    def withheld(self) -> str | None:
        """Why `credentials()` is None, or None."""
        if self.stopped or self.server_exited:
            return "not running"
        return self._withheld

    def credentials(self) -> DeephavenCredentials | None:
        """Host, port, auth type and token, or None unless the server took them and the
        last check passed (see `withheld`)."""
        if self.withheld is not None:
            return None
        spec = self.spec
        return DeephavenCredentials(spec.host, spec.port, spec.auth_type, spec.token)

    def checked(self, result: CheckResult) -> None:
        """Record a check (or the start's verdict): credentials follow its outcome."""
        self._withheld = None if result.ok else f"{result.liveness.value}: {result.detail}"

    async def wait(self) -> Termination:
        if self.server is not None:
            term = await self.server.wait()
            self.server_exited = True
            self.client.kill()  # the supervisor forgets an exited handle: leave nothing
            return term
        return await self.client.wait_ended()

    async def stop(self, timeout: float) -> Termination:
        self.stopped = True
        await self.client.close()
        if self.server is not None:
            return await self.server.stop(timeout)
        return Termination("exit_code", "session closed", exit_code=0)

    def kill(self) -> None:
        self.stopped = True
        self.client.kill()
        if self.server is not None:
            self.server.kill()


class DeephavenLauncher:
    """Launches a server named `name` and our client helpers, from the settings given."""

    def __init__(
        self,
        name: str,
        launcher: LocalLauncher,
        *,
        docker: DockerEngine | None = None,
        pick_port: Callable[[str], int] = pick_free_port,
        log_context: Mapping[str, str],
        output: LineKeeper | None = None,
        relay: bool = True,
    ) -> None:
        """`output` keeps a local server's output lines; `relay` also logs them."""
        self.name = name
        self._launcher = launcher
        self._output = output
        self._relay = relay
        self._docker = docker
        self._pick_port = pick_port
        self._log = structlog.get_logger("supervisor.deephaven").bind(**log_context)
        self._output_log = structlog.get_logger("supervisor.output").bind(**log_context)

    async def launch(self, config: DeephavenConfig, token: str) -> DeephavenHandle:
        """Start the server `config.launch` names, and a helper; `ready` then connects.

        Raises:
            StartError: the server did not start (retried per policy).
            MisconfiguredError: it never will with these settings (no Java, no engine).
        """
        redact = Redactor([token])
        if config.launch == "python":
            return await self._launch_python(config, token, redact)
        return await self._launch_docker(config, token, redact)

    async def ready(self, config: DeephavenConfig, handle: DeephavenHandle) -> None:
        """Return once our session on a launched server works; the caller bounds the wait.

        Raises:
            UnauthorizedError, MisconfiguredError: the server refuses the session.
        """
        if handle.server is None:
            return
        # An authenticated call proves it serves us (a local server said it started; a
        # container's port answers before its server does, so that one needs retries).
        failures = 0
        while not handle.client.connected:
            try:
                if not handle.client.alive:
                    handle.client = await self.open_client(config, Redactor([handle.spec.token]))
                await handle.client.connect(handle.spec, min(config.start_timeout, 10.0))
            except DeephavenClientError as exc:
                if liveness_of(exc) in (Liveness.UNAUTHORIZED, Liveness.MISCONFIGURED):
                    raise start_error(exc) from None
                failures += 1
                # The first connect was made at once, so even the first retry waits: it
                # is backoff's second failure, the first one that waits.
                await trio.sleep(backoff_delay(failures + 1, CONNECT_RETRY, 0.0))
                continue
            await _mark_baseline(handle.client, self._log)
        handle.checked(CheckResult(Liveness.ONLINE))

    async def check(self, config: DeephavenConfig, handle: DeephavenHandle) -> CheckResult:
        """One real RPC on a launched server's session; a failed session is recreated."""
        assert handle.server is not None
        client = handle.client
        if client.busy:
            return CheckResult(Liveness.ONLINE, "busy: a call is in progress")
        try:
            if not client.alive:
                raise HelperGoneError("client helper is gone")
            await client.ping(config.liveness.timeout)
            return CheckResult(Liveness.ONLINE)
        except DeephavenClientError as exc:
            self._log.warning("deephaven_session_failed", detail=describe(exc))
        return await self._recreate_session(config, handle)

    async def open_client(self, config: DeephavenConfig, redact: Redactor) -> DeephavenClient:
        """A new client helper, its output redacted and relayed to the log.

        Raises:
            HelperGoneError: the helper exited or did not connect in time.
        """
        log = self._output_log.bind(stream_of="deephaven_client")

        def relay(stream: str, line: str) -> None:
            log.info("output", stream=stream, line=redact(line))

        env = self._child_environment(config)
        return await open_client(self._launcher, on_output=relay, env=env)

    async def _recreate_session(
        self, config: DeephavenConfig, handle: DeephavenHandle
    ) -> CheckResult:
        """A launched server whose session failed: new session (new helper if needed)."""
        if handle.server_exited:
            return CheckResult(Liveness.OFFLINE, "server exited")
        timeout = config.liveness.timeout
        try:
            if not handle.client.alive:
                handle.client.kill()
                handle.client = await self.open_client(config, Redactor([handle.spec.token]))
            await handle.client.connect(handle.spec, timeout)
            await _mark_baseline(handle.client, self._log)
        except DeephavenClientError as exc:
            return CheckResult(liveness_of(exc), describe(exc))
        self._log.info("deephaven_session_recreated", pid=handle.client.pid)
        return CheckResult(Liveness.ONLINE, "session recreated")

    async def _launch_python(
        self, config: DeephavenConfig, token: str, redact: Redactor
    ) -> DeephavenHandle:
        if (
            problem := python_launch_problem(python_for(config.python_venv), config.env)
        ) is not None:
            raise MisconfiguredError(problem)
        psk = token if config.auth_type == PSK_HANDLER else None
        fixed = config.port if isinstance(config.port, int) else None
        auto = fixed is None
        for attempt in range(1, PORT_ATTEMPTS + 1):
            port = self._pick_port(config.host) if fixed is None else fixed
            spec = ServerSpec(
                host=config.host,
                port=port,
                psk=psk,
                heap_mb=config.heap_mb,
                jvm_args=tuple(config.jvm_args),
                python=python_for(config.python_venv),
                env=config.env,
            )
            watch = ServerOutput(redact, self._output_log if self._relay else None, self._output)
            server = await spawn_server(
                self._launcher,
                spec,
                env=self._child_environment(config, {"SUPERVISOR_RESOURCE": self.name}),
                on_output=watch.line,
                record_as=self.name,
            )
            try:
                client = await self.open_client(config, redact)
                try:
                    await wait_started(watch, server)
                except BaseException:
                    client.kill()
                    raise
            except BaseException:
                server.kill()
                raise
            if not server.exited.is_set():
                connect = connect_spec(config, _client_host(config.host), port, token)
                self._log.info("deephaven_server_started", pid=server.pid, port=port)
                return DeephavenHandle(connect, client, server)
            client.kill()
            with trio.move_on_after(1.0):
                await server.output_done.wait()
            term = server.termination
            assert term is not None
            if auto and watch.bind_failed and attempt < PORT_ATTEMPTS:
                self._log.warning("deephaven_port_taken", port=port, attempt=attempt)
                continue
            raise StartError(f"server {term.detail} before it started: {watch.tail()}")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _launch_docker(
        self, config: DeephavenConfig, token: str, redact: Redactor
    ) -> DeephavenHandle:
        """Run the server image; readiness (`ready`) retries the first connect."""
        if self._docker is None:
            raise MisconfiguredError('launch = "docker" needs a Docker engine, and none is set up')
        container = await run_server_container(self._docker, self.name, config, token)
        try:
            client = await self.open_client(config, redact)
        except BaseException:
            container.kill()
            raise
        port = container.ports[CONTAINER_PORT]
        self._log.info("deephaven_container_started", container=container.id[:12], port=port)
        return DeephavenHandle(connect_spec(config, "127.0.0.1", port, token), client, container)

    def _child_environment(
        self, config: DeephavenConfig, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The environment of our children, without the variable our token came from."""
        env = scrubbed_environment(extra or {})
        if config.token_env is not None:
            env.pop(config.token_env, None)
        return env


def connect_spec(config: DeephavenConfig, host: str, port: int, token: str) -> ConnectSpec:
    """Where and how our helper opens a session, from `config`."""
    return ConnectSpec(
        host=host,
        port=port,
        auth_type=config.auth_type,
        token=token,
        use_tls=config.use_tls,
        tls_root_certs=config.tls_root_certs,
        client_cert_chain=config.client_cert_chain,
        client_private_key=config.client_private_key,
        session_type=config.session_type,
    )


async def _mark_baseline(
    client: DeephavenClient, log: structlog.typing.FilteringBoundLogger
) -> None:
    try:
        await client.mark_baseline(5.0)
    except DeephavenClientError as exc:  # a groovy console, say: reset is then unavailable
        log.info("deephaven_baseline_skipped", detail=describe(exc))


def _client_host(bind_host: str) -> str:
    """Where a client reaches a server bound to `bind_host`."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host  # noqa: S104
