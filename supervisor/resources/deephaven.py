"""`kind = "deephaven"`: a Deephaven session, connected to a server or to one we launch.

Why it is built this way:
- The supervised item is the session. Connected (no `launch`), the handle is the client
  helper: a helper that crashes ends the handle (a restart); a session that fails its
  liveness RPC `failures` times in a row is recreated by a restart with reason `liveness`.
- Launched (`launch = "python"`), the handle is the server process plus the helper. The
  server's exit ends the handle at once (pushed by its pidfd, not seen at the next check).
  A session that dies under a live server, or a helper that crashes, is recreated inside
  the check without touching the server; only a server that stops answering (frozen,
  overloaded) fails the check and is restarted.
- Liveness is a real RPC under a deadline in the helper (never `is_alive`, which makes no
  RPC), classified by gRPC status (`deephaven_client.classify`).
- A server start waits for `Server started on port N` in its output, then for an
  authenticated call to succeed. With `port = "auto"`, a bind failure (someone took the
  port between our pick and the server's bind) retries on a new port within the start.
- Secrets never reach a child's argv or environment, nor a container's config: tokens go
  to the helper over its private socket, the PSK to a local server over another one
  (`launchers.deephaven.spawn_server`), and to a container in a `deephaven.prop` of its
  own, 0600 in a 0700 directory, bind-mounted read-only over the image's (the documented
  way to configure ghcr.io/deephaven/server) and deleted from the host once the container
  runs (the mount keeps it readable inside). That file sets the console type from
  `session_type` too, since it replaces the image's. The variable `token_env` names is
  removed from every child's environment. Every output line is redacted; `detail`
  strings never hold a token. The key file is a bind mount, so it needs an engine on
  this host (a remote `DOCKER_HOST` would mount a path of its own machine).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import structlog
import trio

from supervisor.config.deephaven import PSK_HANDLER, DeephavenConfig
from supervisor.errors import DeephavenClientError, HelperGoneError, MisconfiguredError, StartError
from supervisor.launchers.deephaven import (
    ANONYMOUS_HANDLER,
    Redactor,
    ServerOutput,
    ServerSpec,
    generate_psk,
    pick_free_port,
    python_for,
    python_launch_problem,
    server_properties,
    spawn_server,
    wait_started,
)
from supervisor.launchers.docker import RESOURCE_LABEL, ContainerSpec, DockerEngine
from supervisor.launchers.local import LocalLauncher, scrubbed_environment
from supervisor.resources.deephaven_client import (
    ConnectSpec,
    DeephavenClient,
    describe,
    liveness_of,
    lost_session_result,
    open_client,
    start_error,
)
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.policy import Termination
from supervisor.supervision.resource import CheckResult, CheckSettings, Handle
from supervisor.supervision.states import Liveness

PORT_ATTEMPTS = 5
CONTAINER_PORT = "10000/tcp"
# Where ghcr.io/deephaven/server reads its configuration (DEEPHAVEN_CONFIG_DIR).
CONTAINER_CONFIG_DIR = "/opt/deephaven/config"
_CONNECT_RETRY = 0.25


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

    @property
    def pid(self) -> int | None:
        return self.server.pid if self.server is not None else self.client.pid

    @property
    def ident(self) -> str | None:
        return self.server.ident if self.server is not None else None

    @property
    def endpoint(self) -> str:
        return f"{self.spec.host}:{self.spec.port}"

    async def wait(self) -> Termination:
        if self.server is not None:
            term = await self.server.wait()
            self.server_exited = True
            self.client.kill()  # the supervisor forgets an exited handle: leave nothing
            return term
        client = self.client
        term = await client.process.wait()
        if client.killed:
            # Killed on purpose (a call that hung): the liveness check reports the lost
            # session, and its failure count decides the restart.
            await trio.sleep_forever()
        return Termination(term.reason, f"client helper {term.detail}", term.exit_code, term.signal)

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


class DeephavenResource:
    """A Deephaven session (`launch` unset) or a launched server and its session."""

    kind = "deephaven"

    def __init__(
        self,
        name: str,
        config: DeephavenConfig,
        launcher: LocalLauncher,
        *,
        identity: FullName | None = None,
        docker: DockerEngine | None = None,
        pick_port: Callable[[str], int] = pick_free_port,
    ) -> None:
        self.name = name
        self.config = config
        self.identity = identity or FullName.community(name)
        self._launcher = launcher
        self._docker = docker
        self._pick_port = pick_port
        # Generated once per resource: a restarted server keeps its clients' credentials.
        self._generated_psk = generate_psk()
        self._handle: DeephavenHandle | None = None
        self._log = structlog.get_logger("supervisor.deephaven").bind(
            resource=name, deephaven=str(self.identity)
        )
        self._output_log = structlog.get_logger("supervisor.output").bind(
            resource=name, deephaven=str(self.identity)
        )

    def reconfigure(self, config: DeephavenConfig) -> None:
        """Apply settings that need no new session (liveness, timeouts, restart)."""
        self.config = config

    # ------------------------------------------------------------------ Resource protocol

    @property
    def check_settings(self) -> CheckSettings | None:
        live = self.config.liveness
        return CheckSettings(live.interval, live.timeout, live.failures, reason="liveness")

    async def start(self) -> Handle:
        token = await self._token()
        redact = Redactor([token])
        if self.config.launch is None:
            spec = self._connect_spec(self.config.host, self._connect_port(), token)
            client = await self._open_client(redact)
            try:
                if not self.config.lazy:
                    await _connect_or_raise(client, spec, self.config.start_timeout)
            except BaseException:
                client.kill()
                raise
            handle = DeephavenHandle(spec, client)
        elif self.config.launch == "python":
            handle = await self._launch_python(token, redact)
        else:
            handle = await self._launch_docker(token, redact)
        self._handle = handle
        return handle

    async def ready(self, handle: Handle) -> None:
        assert isinstance(handle, DeephavenHandle)
        if handle.server is None or handle.client.connected:
            return
        # An authenticated call proves it serves us (a local server said it started; a
        # container's port answers before its server does, so that one needs retries).
        while True:
            try:
                if not handle.client.alive:
                    handle.client = await self._open_client(Redactor([handle.spec.token]))
                await handle.client.connect(handle.spec, min(self.config.start_timeout, 10.0))
            except DeephavenClientError as exc:
                if liveness_of(exc) in (Liveness.UNAUTHORIZED, Liveness.MISCONFIGURED):
                    raise start_error(exc) from None
                await trio.sleep(_CONNECT_RETRY)
                continue
            await _mark_baseline(handle.client, self._log)
            return

    async def check(self, handle: Handle) -> CheckResult:
        assert isinstance(handle, DeephavenHandle)
        client = handle.client
        timeout = self.config.liveness.timeout
        if client.busy:
            return CheckResult(Liveness.ONLINE, "busy: a call is in progress")
        if not client.connected and client.alive and handle.server is None:
            return await _tcp_check(handle.spec)  # lazy: no session yet
        try:
            if not client.alive:
                raise HelperGoneError("client helper is gone")
            await client.ping(timeout)
            return CheckResult(Liveness.ONLINE)
        except DeephavenClientError as exc:
            if handle.server is None:
                return lost_session_result(exc)
            self._log.warning("deephaven_session_failed", detail=describe(exc))
        return await self._recreate_session(handle)

    def is_success(self, term: Termination) -> bool:
        return False  # a session or a server never ends by doing its job

    # ------------------------------------------------------------------- for the API

    @property
    def endpoint(self) -> str | None:
        handle = self._handle
        return handle.endpoint if handle is not None else None

    def credentials(self) -> DeephavenCredentials | None:
        """Host, port, auth type and token of the running session, or None when down."""
        handle = self._handle
        if handle is None or handle.stopped:
            return None
        if handle.server_exited:
            return None
        spec = handle.spec
        return DeephavenCredentials(spec.host, spec.port, spec.auth_type, spec.token)

    async def run_script(self, script: str, timeout: float) -> None:
        """Run `script` in the managed session (creating it first if lazy)."""
        client = await self._session(timeout)
        await client.run_script(script, timeout)

    async def reset_scope(self, timeout: float) -> None:
        """Delete the user's globals from the managed Python session."""
        client = await self._session(timeout)
        await client.reset_scope(timeout)

    @property
    def client(self) -> DeephavenClient | None:
        return self._handle.client if self._handle is not None else None

    # --------------------------------------------------------------------- internals

    async def _session(self, timeout: float) -> DeephavenClient:
        handle = self._handle
        if handle is None or not handle.client.alive:
            raise HelperGoneError(f"{self.name} has no running session")
        if not handle.client.connected:
            await _connect_or_raise(handle.client, handle.spec, timeout)
        return handle.client

    async def _recreate_session(self, handle: DeephavenHandle) -> CheckResult:
        """A launched server whose session failed: new session (new helper if needed)."""
        assert handle.server is not None
        if handle.server_exited:
            return CheckResult(Liveness.OFFLINE, "server exited")
        timeout = self.config.liveness.timeout
        try:
            if not handle.client.alive:
                handle.client.kill()
                handle.client = await self._open_client(Redactor([handle.spec.token]))
            await handle.client.connect(handle.spec, timeout)
            await _mark_baseline(handle.client, self._log)
        except DeephavenClientError as exc:
            return CheckResult(liveness_of(exc), describe(exc))
        self._log.info("deephaven_session_recreated", pid=handle.client.pid)
        return CheckResult(Liveness.ONLINE, "session recreated")

    async def _launch_python(self, token: str, redact: Redactor) -> DeephavenHandle:
        config = self.config
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
            watch = ServerOutput(redact, self._output_log)
            server = await spawn_server(
                self._launcher,
                spec,
                env=self._child_environment({"SUPERVISOR_RESOURCE": self.name}),
                on_output=watch.line,
                record_as=self.name,
            )
            try:
                client = await self._open_client(redact)
                try:
                    await wait_started(watch, server)
                except BaseException:
                    client.kill()
                    raise
            except BaseException:
                server.kill()
                raise
            if not server.exited.is_set():
                connect = self._connect_spec(_client_host(config.host), port, token)
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

    async def _launch_docker(self, token: str, redact: Redactor) -> DeephavenHandle:
        """Run the server image; readiness (`ready`) retries the first connect."""
        config = self.config
        if self._docker is None:
            raise MisconfiguredError('launch = "docker" needs a Docker engine, and none is set up')
        # JVM arguments go in START_OPTS, the image's documented interface for them
        # (ghcr.io/deephaven/server); the key is not one (see the module docstring).
        opts = [f"-Xmx{config.heap_mb}m"] if config.heap_mb is not None else []
        opts += config.jvm_args
        properties = None
        if config.auth_type == PSK_HANDLER:
            try:
                properties = server_properties(token, config.session_type)
            except ValueError as exc:
                raise MisconfiguredError(f"token: {exc}") from None
            # Named outright, so our file is the one read whatever the image's environment.
            opts.append(f"-Ddeephaven.configDir={CONTAINER_CONFIG_DIR}")
        else:
            opts.append(f"-DAuthHandlers={ANONYMOUS_HANDLER}")
        key_dir = None
        try:
            volumes = list(config.volumes)
            if properties is not None:
                key_dir = tempfile.mkdtemp(prefix="supervisor-dh-")  # 0700
                key_file = _write_private(os.path.join(key_dir, "deephaven.prop"), properties)
                volumes.append(f"{key_file}:{CONTAINER_CONFIG_DIR}/deephaven.prop:ro")
            spec = ContainerSpec(
                image=config.docker_image,
                name=f"deephaven-{self.name}",
                env={**config.env, "START_OPTS": " ".join(opts)},
                labels={RESOURCE_LABEL: self.name},
                init=True,
                memory=config.memory,
                cpus=config.cpus,
                volumes=tuple(volumes),
                # None: the engine picks a free host port on 127.0.0.1 (no race to lose).
                ports={CONTAINER_PORT: config.port if isinstance(config.port, int) else None},
            )
            container = await self._docker.run(spec)
        finally:
            if key_dir is not None:  # started or not, no copy stays: a container keeps its mount
                shutil.rmtree(key_dir, ignore_errors=True)
        try:
            client = await self._open_client(redact)
        except BaseException:
            container.kill()
            raise
        port = container.ports[CONTAINER_PORT]
        self._log.info("deephaven_container_started", container=container.id[:12], port=port)
        return DeephavenHandle(self._connect_spec("127.0.0.1", port, token), client, container)

    async def _open_client(self, redact: Redactor) -> DeephavenClient:
        log = self._output_log.bind(stream_of="deephaven_client")

        def relay(stream: str, line: str) -> None:
            log.info("output", stream=stream, line=redact(line))

        return await open_client(self._launcher, on_output=relay, env=self._child_environment())

    def _child_environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of our children, without the variable our token came from."""
        env = scrubbed_environment(extra or {})
        if self.config.token_env is not None:
            env.pop(self.config.token_env, None)
        return env

    def _connect_spec(self, host: str, port: int, token: str) -> ConnectSpec:
        config = self.config
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

    def _connect_port(self) -> int:
        port = self.config.port
        assert isinstance(port, int)
        return port

    async def _token(self) -> str:
        """The token: explicit > environment > file > generated (launched PSK only).

        Raises:
            MisconfiguredError: the variable is unset or the file unreadable or empty.
        """
        config = self.config
        if config.auth_type == "Anonymous":
            return ""
        if config.token is not None:
            return config.token.get_secret_value()
        if config.token_env is not None:
            value = os.environ.get(config.token_env, "")
            if not value:
                raise MisconfiguredError(f"token_env: ${config.token_env} is unset or empty")
            return value
        if config.token_file is not None:
            try:
                value = (await trio.Path(config.token_file).read_text()).strip()
            except OSError as exc:
                raise MisconfiguredError(
                    f"token_file: cannot read {config.token_file}: {exc.strerror}"
                ) from None
            if not value:
                raise MisconfiguredError(f"token_file: {config.token_file} is empty")
            return value
        return self._generated_psk


async def _connect_or_raise(client: DeephavenClient, spec: ConnectSpec, timeout: float) -> None:
    """Open the session; map failures to what the supervisor does next."""
    try:
        await client.connect(spec, timeout)
    except DeephavenClientError as exc:
        raise start_error(exc) from None


async def _mark_baseline(
    client: DeephavenClient, log: structlog.typing.FilteringBoundLogger
) -> None:
    try:
        await client.mark_baseline(5.0)
    except DeephavenClientError as exc:  # a groovy console, say: reset is then unavailable
        log.info("deephaven_baseline_skipped", detail=describe(exc))


async def _tcp_check(spec: ConnectSpec) -> CheckResult:
    try:
        stream = await trio.open_tcp_stream(spec.host, spec.port)
    except OSError as exc:
        return CheckResult(Liveness.OFFLINE, f"{spec.host}:{spec.port}: {exc.strerror or exc}")
    await stream.aclose()
    return CheckResult(Liveness.ONLINE, "no session yet (lazy)")


def _write_private(path: str, text: str) -> str:
    """Write `text` to a new file, mode 0600 whatever the umask; return its path."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
    return path


def _client_host(bind_host: str) -> str:
    """Where a client reaches a server bound to `bind_host`."""
    return "127.0.0.1" if bind_host in ("0.0.0.0", "") else bind_host  # noqa: S104
