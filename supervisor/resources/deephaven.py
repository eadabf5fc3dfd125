"""`kind = "deephaven"`: a Deephaven session, connected to a server or to one we launch.

Why it is built this way:
- The supervised item is the session. Connected (no `launch`), the handle is the client
  helper: a helper that crashes ends the handle (a restart); a session that fails its
  liveness RPC `failures` times in a row is recreated by a restart with reason `liveness`.
- Launched (`launch = "python"` or `"docker"`), the server and the session on it come from
  `launchers.deephaven.launch`, shared with the deephaven sandboxes: the server's exit
  ends the handle at once, and a session that dies under a live server is recreated
  inside the check without touching the server.
- Liveness is a real RPC under a deadline in the helper (never `is_alive`, which makes no
  RPC), classified by gRPC status (`launchers.deephaven.client.classify`).
- Secrets never reach a child's argv or environment, nor a container's config: tokens go
  to the helper over its private socket and to a launched server as the launcher hands
  them over. The variable `token_env` names is removed from every child's environment.
  A PSK server launched without a token gets one generated per resource, so a restarted
  server keeps its clients' credentials.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
    lost_session_result,
    start_error,
)
from supervisor.launchers.deephaven.launch import (
    DeephavenHandle,
    DeephavenLauncher,
    connect_spec,
)
from supervisor.launchers.deephaven.output import Redactor
from supervisor.launchers.deephaven.server import generate_psk, pick_free_port
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.policy import Termination
from supervisor.supervision.resource import CheckResult, CheckSettings, Handle, ResourceBase
from supervisor.supervision.states import Liveness


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
    ) -> None:
        self.name = name
        self.config = config
        self.identity = identity or FullName.community(name)
        self._deephaven = DeephavenLauncher(
            name,
            launcher,
            docker=docker,
            pick_port=pick_port,
            log_context={"resource": name, "deephaven": str(self.identity)},
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

    async def start(self) -> Handle:
        token = await self._token()
        if self.config.launch is not None:
            handle = await self._deephaven.launch(self.config, token)
        else:
            spec = connect_spec(self.config, self.config.host, self._connect_port(), token)
            client = await self._deephaven.open_client(self.config, Redactor([token]))
            try:
                if not self.config.lazy:
                    await _connect_or_raise(client, spec, self.config.start_timeout)
            except BaseException:
                client.kill()
                raise
            handle = DeephavenHandle(spec, client)
        self._handle = handle
        return handle

    async def ready(self, handle: Handle) -> None:
        assert isinstance(handle, DeephavenHandle)
        await self._deephaven.ready(self.config, handle)

    async def check(self, handle: Handle) -> CheckResult:
        assert isinstance(handle, DeephavenHandle)
        if handle.server is not None:
            return await self._deephaven.check(self.config, handle)
        client = handle.client
        if client.busy:
            return CheckResult(Liveness.ONLINE, "busy: a call is in progress")
        if not client.connected and client.alive:
            return await _tcp_check(handle.spec)  # lazy: no session yet
        try:
            if not client.alive:
                raise HelperGoneError("client helper is gone")
            await client.ping(self.config.liveness.timeout)
        except DeephavenClientError as exc:
            return lost_session_result(exc)
        return CheckResult(Liveness.ONLINE)

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
        """Host, port, auth type and token of the running session.

        Raises:
            NotRunningError: the session is down.
        """
        handle = self._handle
        creds = handle.credentials() if handle is not None else None
        if creds is None:
            raise NotRunningError(f"{self.name} is not running: no credentials yet")
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


async def _tcp_check(spec: ConnectSpec) -> CheckResult:
    try:
        stream = await trio.open_tcp_stream(spec.host, spec.port)
    except OSError as exc:
        return CheckResult(Liveness.OFFLINE, f"{spec.host}:{spec.port}: {exc.strerror or exc}")
    await stream.aclose()
    return CheckResult(Liveness.ONLINE, "no session yet (lazy)")
