"""Fake of `deephaven_enterprise.client.session_manager`: SessionManager and DndSession.

Signatures and error behaviour follow deephaven-coreplus-client 2026.1.62: unknown or
stopped queries raise RuntimeError, a rejected login raises AuthenticationFailedException,
RPC failures raise gRPC-like errors, `ping()` is False when not logged in, and closing a
session made by `connect_to_new_worker` deletes its query.
"""

from __future__ import annotations

import contextlib
import io
import json as jsonlib
import re
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from deephaven.table import Table  # the worker's side of the fake

from deephaven_enterprise.client._fake_server import FakeRpcError, Server, StatusCode
from deephaven_enterprise.client.auth import AuthenticationFailedException
from deephaven_enterprise.client.controller import ControllerClient, pq_info

_REQUIRED = ("auth_host", "auth_port", "controller_host", "controller_port")


class SessionManager:
    def __init__(
        self,
        url: str | None = None,
        truststore_bytes: bytes | None = None,
        json: str | None = None,
        client_name: str | None = None,
        rpc_timeout_seconds: int = 120,
    ) -> None:
        if url is not None and json is not None:
            raise RuntimeError("url and json are mutually exclusive")
        if json is None:
            raise RuntimeError("the fake takes json= only (the helper fetches the URL itself)")
        self.config = jsonlib.loads(json)
        missing = [k for k in _REQUIRED if k not in self.config]
        if missing:
            raise KeyError(missing[0])
        self.server = Server(self.config)
        self.rpc_timeout_seconds = rpc_timeout_seconds
        self.client_name = client_name
        self.controller_client = ControllerClient(self.server)
        self.active_sessions: list[DndSession] = []
        self.scopes: dict[int, dict[str, Any]] = {}
        self.user: str | None = None

    def password(self, user: str, password: str, effective_user: str | None = None) -> None:
        state = self.server.rpc("authenticate_by_password", user=user)
        if state.get("users", {}).get(user) != password:
            raise AuthenticationFailedException("Failed to authenticate with password.")
        self._logged_in(user)

    def private_key(self, file: str | io.StringIO) -> None:
        with open(file) if isinstance(file, str) else file as fp:
            key = {}
            for line in fp.readlines():
                stripped = line.split("#", 1)[0].strip()
                if stripped:
                    kv = re.split(r"\s+", stripped, maxsplit=2)
                    key[kv[0]] = kv[1]
        for field in ("public", "private", "user", "operateas"):
            if field not in key:
                raise ValueError(
                    f"'{file}' is not a Deephaven private key file, {field} is not present"
                )
        state = self.server.rpc("authenticate_by_key", user=key["user"])
        if state.get("keys", {}).get(key["user"]) != key["private"]:
            raise AuthenticationFailedException("Failed to authenticate with private key.")
        self._logged_in(key["user"])

    def ping(self) -> bool:
        if self.user is None:
            return False
        self.server.rpc("auth_ping", user=self.user)
        return self.controller_client.ping()

    def close(self) -> None:
        while self.active_sessions:
            self.active_sessions.pop().close()
        self.controller_client.close()
        self.user = None

    def connect_to_persistent_query(
        self,
        name: str | None = None,
        serial: int | None = None,
        session_arguments: dict[str, Any] | None = None,
    ) -> DndSession:
        found = [pq for pq in self.controller_client.map().values() if pq.config.name == name]
        if not found:
            raise RuntimeError(f"Could not find Persistent Query with name: {name}")
        pqinfo = found[0]
        if not self.controller_client.is_running(pqinfo.state.status):
            raise RuntimeError(f"Query '{name}' is not running")
        return self._make_session(pqinfo, owns_pq=False)

    def connect_to_new_worker(
        self,
        name: str | None,
        heap_size_gb: float,
        server: str | None = None,
        extra_jvm_args: list[str] | None = None,
        extra_environment_vars: list[str] | None = None,
        engine: str = "DeephavenCommunity",
        auto_delete_timeout: int | None = 600,
        admin_groups: list[str] | None = None,
        viewer_groups: list[str] | None = None,
        timeout_seconds: float = 60,
        configuration_transformer: Callable[[Any], Any] | None = None,
        session_arguments: dict[str, Any] | None = None,
    ) -> DndSession:
        config = self.controller_client.make_temporary_config(
            name or "Python Console",
            heap_size_gb,
            server=server,
            extra_jvm_args=extra_jvm_args,
            extra_environment_vars=extra_environment_vars,
            engine=engine,
            auto_delete_timeout=auto_delete_timeout,
        )
        if configuration_transformer is not None:
            config = configuration_transformer(config)
        serial, state = self.server.add_query(
            name=config.name,
            heap_size_gb=config.heapSizeGb,
            jvm_args=config.extraJvmArguments,
            auto_delete_timeout=config.autoDeleteTimeout,
            language=config.scriptLanguage,
            timeout_seconds=timeout_seconds,
        )
        if state.get("workers_fail"):
            self.controller_client.delete_query(serial)
            raise RuntimeError(f"Query '{config.name}' is not running after 0.0 seconds.")
        pq = {"serial": serial, "name": config.name, "language": config.scriptLanguage}
        return self._make_session(pq_info(pq), owns_pq=True)

    def _logged_in(self, user: str) -> None:
        self.user = user
        self.controller_client.cookie = f"cookie-{user}"

    def _make_session(self, pqinfo: Any, *, owns_pq: bool) -> DndSession:
        self.server.rpc("connect_session", serial=pqinfo.config.serial)
        session = DndSession(self, pqinfo)
        if owns_pq:
            session._owned_pq_serial = pqinfo.config.serial
        self.active_sessions.append(session)
        return session


class _ConfigStub:
    def __init__(self, session: DndSession) -> None:
        self._session = session

    def GetConfigurationConstants(self, request: Any, timeout: float | None = None) -> Any:
        serial = self._session.pqinfo().config.serial
        state = self._session.session_manager.server.rpc(
            "get_configuration_constants", serial=serial
        )
        if serial in state.get("dropped", []):
            raise FakeRpcError(StatusCode.UNAUTHENTICATED, "Authentication details invalid")
        running = [pq for pq in state.get("pqs", []) if pq["serial"] == serial]
        if running and running[0].get("status", "PQS_RUNNING") != "PQS_RUNNING":
            raise FakeRpcError(StatusCode.UNAVAILABLE, "worker is not running")
        return SimpleNamespace(config_values={})


class _ConsoleService:
    """pydeephaven's console service: the worker's Python console (see `_worker_scope`).

    `run_script` answers as the server does: `error_message` (empty on success) and the
    table variables the script created or updated.
    """

    def __init__(self, session: DndSession) -> None:
        self._session = session

    def run_script(self, server_script: str) -> Any:
        session = self._session
        serial = session.pqinfo().config.serial
        state = session.session_manager.server.rpc(
            "run_script", serial=serial, script=server_script
        )
        if serial in state.get("dropped", []):
            raise FakeRpcError(StatusCode.UNAUTHENTICATED, "Authentication details invalid")
        scope = session.scope
        before = {k: v for k, v in scope.items() if _is_table(v)}
        error = ""
        try:
            exec(compile(server_script, "<string>", "exec"), scope)  # noqa: S102 - the fake console
        except Exception as exc:  # the server answers with the error's text
            error = "Error in Python interpreter:\n" + "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)
            )
        created = [k for k, v in scope.items() if _is_table(v) and k not in before]
        updated = [k for k, v in scope.items() if k in before and v is not before[k]]
        changes = SimpleNamespace(
            created=[SimpleNamespace(field_name=k) for k in created],
            updated=[SimpleNamespace(field_name=k) for k in updated],
            removed=[SimpleNamespace(field_name=k) for k in before if k not in scope],
        )
        return SimpleNamespace(error_message=error, changes=changes)


def _is_table(value: object) -> bool:
    return isinstance(value, Table)


class DndSession:
    """A session to a query's worker; the real one is a pydeephaven.Session."""

    def __init__(self, session_manager: SessionManager, pqinfo: Any) -> None:
        self.session_manager = session_manager
        self._pqinfo = pqinfo
        self._owned_pq_serial: int | None = None
        self.config_service = SimpleNamespace(_grpc_app_stub=_ConfigStub(self))
        self.console_service = _ConsoleService(self)
        self.is_alive = True
        # The worker's console globals, shared by the sessions of this helper.
        self.scope = session_manager.scopes.setdefault(pqinfo.config.serial, {})

    def pqinfo(self) -> Any:
        return self._pqinfo

    def wrap_rpc(self, stub_call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return stub_call(*args, **kwargs)

    def run_script(self, script: str) -> None:
        response = self.console_service.run_script(script)
        if response.error_message:
            raise RuntimeError(response.error_message)  # pydeephaven raises DHError

    def open_table(self, name: str) -> Any:
        """The table bound to `name` in the worker's console (DHError if there is none)."""
        self.session_manager.server.rpc("open_table", serial=self._pqinfo.config.serial)
        table = self.scope.get(name)
        if not _is_table(table):
            raise RuntimeError(f"failed to open table {name}")
        return table

    def close(self) -> None:
        self.is_alive = False
        if self._owned_pq_serial is not None:
            self.session_manager.controller_client.delete_query(self._owned_pq_serial)
            self._owned_pq_serial = None
        with contextlib.suppress(ValueError):
            self.session_manager.active_sessions.remove(self)
