"""`kind = "deephaven"`: a Deephaven session, connected to a server or to one we launch.

Why it is built this way:
- The supervised item is the session. Connected (no `launch`), the handle is the client
  helper: a helper that crashes ends the handle (a restart); a session that fails its
  liveness RPC `failures` times in a row is recreated by a restart with reason `liveness`.
- Launched (`launch = "python"` or `"docker"`), the server and the session on it come from
  `launchers.deephaven.launch`, shared with the deephaven sandboxes: the server's exit
  ends the handle at once, and a session that dies under a live server is recreated
  inside the check without touching the server.
- Liveness is a real, authenticated RPC under a deadline in the helper (never `is_alive`,
  which makes no RPC, nor a TCP connect), classified by gRPC status
  (`launchers.deephaven.client.classify`). With a session, it is a call on the session;
  a session the server no longer knows is told apart from refused credentials by logging
  in again (`probe`), so a key the server now refuses is UNAUTHORIZED (FATAL) at once.
- `lazy = true` promises no session until first use, so its start and its checks `probe`:
  one login with the credentials on a connection of its own, whose server-side session
  is closed at once. A refused key fails the start as UNAUTHORIZED; an unreachable server
  does not (lazy needs no server to start), its first check reports it OFFLINE.
- Credentials are handed out only while they are known to work: from a passed start or
  check until a failed one (`DeephavenHandle.checked`), never for a stopped resource.
- Secrets never reach a child's argv or environment, nor a container's config: tokens go
  to the helper over its private socket and to a launched server as the launcher hands
  them over. The variable `token_env` names is removed from every child's environment.
  A PSK server launched without a token gets one generated per resource, so a restarted
  server keeps its clients' credentials.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any

import trio

from supervisor.config.deephaven import DeephavenConfig
from supervisor.errors import (
    DeephavenClientError,
    HelperGoneError,
    MisconfiguredError,
    NotRunningError,
)
from supervisor.launchers.deephaven.client import (
    ConnectSpec,
    DeephavenClient,
    describe,
    liveness_of,
    lost_session_result,
    start_error,
)
from supervisor.launchers.deephaven.container import read_server_output
from supervisor.launchers.deephaven.launch import (
    DeephavenHandle,
    DeephavenLauncher,
    connect_spec,
)
from supervisor.launchers.deephaven.output import Redactor
from supervisor.launchers.deephaven.server import generate_psk, pick_free_port
from supervisor.launchers.docker import ContainerHandle, ContainerNotFoundError, DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.observability.output import OutputLog
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.policy import Termination
from supervisor.supervision.resource import (
    CheckResult,
    CheckSettings,
    Handle,
    OutputSource,
    ResourceBase,
)
from supervisor.supervision.states import HOPELESS, Liveness


class DeephavenResource(ResourceBase):
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
        output: OutputLog | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.identity = identity or FullName.community(name)
        self._output = output
        self._docker = docker
        self._deephaven = DeephavenLauncher(
            name,
            launcher,
            docker=docker,
            pick_port=pick_port,
            log_context={"resource": name, "deephaven": str(self.identity)},
            output=output,
            relay=output is None or config.log_output,
        )
        # Generated once per resource: a restarted server keeps its clients' credentials.
        self._generated_psk = generate_psk()
        self._handle: DeephavenHandle | None = None

    def reconfigure(self, config: DeephavenConfig) -> None:
        """Apply settings that need no new session (liveness, timeouts, restart)."""
        self.config = config

    # ------------------------------------------------------------------ Resource protocol

    @property
    def check_settings(self) -> CheckSettings | None:
        live = self.config.liveness
        return CheckSettings(live.interval, live.timeout, live.failures, reason="liveness")

    def output(self) -> OutputSource:
        """A launched server's output, redacted: a local one's kept as a process's is, a
        container's read from its engine (`read`)."""
        if self._output is not None:
            return self._output
        if self.config.launch == "docker" and self._docker is not None:
            return self
        return super().output()

    async def read(self, stream: str, lines: int, follow: bool) -> AsyncGenerator[bytes, None]:
        """The output of the running server container, from its engine's log stream, the
        key redacted; a follow ends when the container does."""
        handle = self._handle
        container = handle.server if handle is not None else None
        if handle is None or not isinstance(container, ContainerHandle) or container.exited:
            raise NotRunningError(
                f"{self.name} has no running server container (its output goes with it)"
            )
        assert self._docker is not None
        output = read_server_output(
            self._docker, container.id, handle.spec.token, stream=stream, lines=lines, follow=follow
        )
        try:
            async with aclosing(output) as pieces:
                async for piece in pieces:
                    yield piece
        except ContainerNotFoundError:
            raise NotRunningError(f"{self.name}: its server container is gone") from None

    async def start(self) -> Handle:
        token = await self._token()
        if self._output is not None:
            self._output.started()
        if self.config.launch is not None:
            handle = await self._deephaven.launch(self.config, token)
        else:
            spec = connect_spec(self.config, self.config.host, self._connect_port(), token)
            client = await self._deephaven.open_client(self.config, Redactor([token]))
            handle = DeephavenHandle(spec, client)
            try:
                if self.config.lazy:
                    refused = await _probe(client, spec, self.config.liveness.timeout)
                    if refused is not None and (
                        liveness_of(refused) in HOPELESS or not client.alive
                    ):
                        raise start_error(refused)
                    handle.checked(_probed(refused))
                else:
                    await _connect_or_raise(client, spec, self.config.start_timeout)
                    handle.checked(CheckResult(Liveness.ONLINE))
            except BaseException:
                client.kill()
                raise
        self._handle = handle
        return handle

    async def ready(self, handle: Handle) -> None:
        assert isinstance(handle, DeephavenHandle)
        await self._deephaven.ready(self.config, handle)

    async def check(self, handle: Handle) -> CheckResult:
        assert isinstance(handle, DeephavenHandle)
        result = await self._check(handle)
        handle.checked(result)
        return result

    def is_success(self, term: Termination) -> bool:
        return False  # a session or a server never ends by doing its job

    # ------------------------------------------------------------------- for the API

    @property
    def endpoint(self) -> str | None:
        handle = self._handle
        return handle.endpoint if handle is not None else None

    @property
    def full_name(self) -> str:
        return str(self.identity)

    def credentials(self) -> dict[str, Any]:
        """Host, port, auth type and token, while they are known to work.

        Raises:
            NotRunningError: the session is down, or its last check failed.
        """
        handle = self._handle
        creds = handle.credentials() if handle is not None else None
        if handle is None or creds is None:
            why = handle.withheld if handle is not None else "not running"
            raise NotRunningError(f"{self.name}: no credentials ({why})")
        return creds.to_json()

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

    async def _check(self, handle: DeephavenHandle) -> CheckResult:
        if handle.server is not None:
            return await self._deephaven.check(self.config, handle)
        client = handle.client
        timeout = self.config.liveness.timeout
        if client.busy:
            return CheckResult(Liveness.ONLINE, "busy: a call is in progress")
        if not client.connected and client.alive:  # lazy: no session yet
            return _probed(await _probe(client, handle.spec, timeout))
        try:
            if not client.alive:
                raise HelperGoneError("client helper is gone")
            await client.ping(timeout)
        except DeephavenClientError as exc:
            if liveness_of(exc) is Liveness.UNAUTHORIZED and client.alive:
                # An expired session, or a key the server now refuses? Log in again.
                refused = await _probe(client, handle.spec, timeout)
                if refused is not None and liveness_of(refused) is Liveness.UNAUTHORIZED:
                    return _probed(refused)
            return lost_session_result(exc)
        return CheckResult(Liveness.ONLINE)

    async def _session(self, timeout: float) -> DeephavenClient:
        handle = self._handle
        if handle is None or not handle.client.alive:
            raise HelperGoneError(f"{self.name} has no running session")
        if not handle.client.connected:
            await _connect_or_raise(handle.client, handle.spec, timeout)
        return handle.client

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


async def _probe(
    client: DeephavenClient, spec: ConnectSpec, timeout: float
) -> DeephavenClientError | None:
    """Log in with `spec`'s credentials, keeping no session; the failure, if any."""
    try:
        await client.probe(spec, timeout)
    except DeephavenClientError as exc:
        return exc
    return None


def _probed(failure: DeephavenClientError | None) -> CheckResult:
    if failure is None:
        return CheckResult(Liveness.ONLINE, "credentials accepted; no session yet (lazy)")
    return CheckResult(liveness_of(failure), describe(failure))
