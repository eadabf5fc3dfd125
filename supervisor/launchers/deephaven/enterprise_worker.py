"""The Enterprise client helper: one Core+ `SessionManager` (and session) per process.

Run as `python -I enterprise_worker.py SOCKET`, with the interpreter of the venv
that has `deephaven-coreplus-client`; the protocol is the community helper's
(`worker.py`): one JSON request per line, one response per line. Why a process:
the Core+ session *is* a pydeephaven session (same crash and hang hazards) and the client
pins its own pydeephaven, so it may have to run in another venv anyway.

Standard library and `deephaven_enterprise` only: it must not import the daemon's package.
It fetches `connection.json` itself (stdlib, under `connection_timeout`) and hands the text
to `SessionManager(json=...)`, so an unreachable or wrong URL is classified here instead
of surfacing as an untyped error from the client's own HTTP call. Failures the daemon
cannot classify by gRPC status are raised as `Failure(type)` with type `settings`,
`unauthorized`, `offline`, or `script` (the console refused a script).

Without the client in this interpreter the helper still starts and answers `login` with a
one-line `settings` failure saying what to install where: an import error here would be a
traceback on stderr at every retry, and a settings failure is MISCONFIGURED (FATAL, then
retried after `fatal_retry`) rather than a fast crash loop.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import socket
import ssl
import sys
import urllib.error
import urllib.request
from typing import Any

# What the README's python_venv instructions install.
CLIENT_REQUIREMENT = "deephaven-coreplus-client>=2026.1.62"
# Error messages end up in status details: short, but a script's traceback may be longer.
_MESSAGE_LIMIT = 500
_SCRIPT_MESSAGE_LIMIT = 4000

# Not a dependency of the daemon's own venv: found only where the helper runs.
try:
    from deephaven_enterprise.client.auth import (  # type: ignore[import-not-found,unused-ignore]
        AuthenticationFailedException,
    )
    from deephaven_enterprise.client.session_manager import (  # type: ignore[import-not-found,unused-ignore]
        SessionManager,
    )
except ImportError as exc:
    MISSING_CLIENT: str | None = f"{type(exc).__name__}: {exc}"
    AuthenticationFailedException = None
    SessionManager = None
else:
    MISSING_CLIENT = None


class Failure(Exception):
    """A failure this helper classified itself (`type` is what the daemon maps)."""

    def __init__(self, type_: str, message: str) -> None:
        super().__init__(message)
        self.type = type_


class Worker:
    """Holds at most one logged-in manager and one session; every method is one request."""

    def __init__(self) -> None:
        self.manager: Any = None
        self.session: Any = None

    def op_login(self, req: dict[str, Any]) -> object:
        self._close_quietly()
        if MISSING_CLIENT is not None:
            raise Failure("settings", missing_client(MISSING_CLIENT))
        timeout = float(req["connection_timeout"])
        truststore = _read(req.get("truststore"), "truststore")
        text = _fetch(req["connection_json_url"], truststore, timeout)
        try:
            json.loads(text)
        except ValueError:
            raise Failure("settings", "connection_json_url: the answer is not JSON") from None
        self.manager = SessionManager(
            json=text,
            truststore_bytes=truststore,
            client_name=req.get("client_name"),
            rpc_timeout_seconds=max(1, math.ceil(timeout)),
        )
        if req["auth"] == "password":
            self.manager.password(req["username"], req["password"])
        else:
            path = req["private_key_file"]
            _read(path, "private_key_file")  # a clear error for a missing or unreadable key
            try:
                self.manager.private_key(path)
            except ValueError as exc:
                raise Failure("settings", f"private_key_file: {exc}") from None
        return None

    def op_ping(self, req: dict[str, Any]) -> object:
        if not self._manager().ping():
            raise Failure("offline", "ping not sent: the manager is no longer authenticated")
        return None

    def op_connect_pq(self, req: dict[str, Any]) -> object:
        manager = self._manager()
        name = req["pq_name"]
        controller = manager.controller_client
        found = [pq for pq in controller.map().values() if pq.config.name == name]
        if not found:
            raise Failure("settings", f"pq_name: no persistent query named {name!r}")
        status = found[0].state.status
        if not controller.is_running(status):
            state = controller.status_name(status)
            raise Failure("offline", f"persistent query {name!r} is not running ({state})")
        self.session = manager.connect_to_persistent_query(name=name)
        return {"serial": int(found[0].config.serial)}

    def op_new_worker(self, req: dict[str, Any]) -> object:
        manager = self._manager()
        language = req.get("programming_language", "python")

        def script_language(config: Any) -> Any:
            config.scriptLanguage = language.capitalize()  # "Python" or "Groovy"
            return config

        auto_delete = req.get("auto_delete_timeout")
        name = req["name"] if req.get("exact_name") else f"{req['name']}-{secrets.token_hex(3)}"
        self.session = manager.connect_to_new_worker(
            name=name,
            heap_size_gb=float(req["heap_gb"]),
            extra_jvm_args=list(req.get("jvm_args") or []),
            auto_delete_timeout=None if auto_delete is None else int(auto_delete),
            timeout_seconds=float(req["worker_timeout"]),
            configuration_transformer=script_language,
        )
        return {"serial": int(self.session.pqinfo().config.serial)}

    def op_session_ping(self, req: dict[str, Any]) -> object:
        # The community helper's liveness RPC (a DndSession is a pydeephaven Session), with
        # a gRPC deadline so a slow worker gives a clean DEADLINE_EXCEEDED.
        from deephaven_core.proto import config_pb2  # type: ignore[import-untyped]  # noqa: PLC0415

        session = self._session()
        session.wrap_rpc(
            session.config_service._grpc_app_stub.GetConfigurationConstants,  # noqa: SLF001 - pydeephaven has no public call for it
            config_pb2.ConfigurationConstantsRequest(),
            timeout=float(req.get("rpc_timeout", 5.0)),
        )
        return None

    def op_run_script(self, req: dict[str, Any]) -> object:
        self._session().run_script(req["script"])
        return None

    def op_run_captured(self, req: dict[str, Any]) -> object:
        """Run a program that may bind a result table `req["result"]`; return its JSON.

        As the community helper's: a DndSession is a pydeephaven Session, whose console
        answer says which variables changed; the result is read with `open_table`.
        """
        session = self._session()
        response = session.console_service.run_script(req["program"])
        if response.error_message:
            raise Failure("script", python_part(response.error_message))
        name = req["result"]
        changed = [*response.changes.created, *response.changes.updated]
        if not any(field.field_name == name for field in changed):
            return None  # nothing was bound: a silent success
        chunks = session.open_table(name).to_arrow().column("chunk").to_pylist()
        return json.loads("".join(chunks))

    def op_list_workers(self, req: dict[str, Any]) -> object:
        """The serials and names of the queries whose name starts with `prefix`."""
        prefix = req["prefix"]
        queries = self._manager().controller_client.map().values()
        return [
            {"serial": int(pq.config.serial), "name": pq.config.name}
            for pq in queries
            if str(pq.config.name).startswith(prefix)
        ]

    def op_delete_worker(self, req: dict[str, Any]) -> object:
        self._manager().controller_client.delete_query(int(req["serial"]))
        return None

    def op_close(self, req: dict[str, Any]) -> object:
        self._close_quietly()
        return None

    def op_debug(self, req: dict[str, Any]) -> object:
        """Fault injection for tests: crash the helper."""
        if req.get("what") == "abort":
            os.abort()
        return None

    def _manager(self) -> Any:
        if self.manager is None:
            raise LookupError("not logged in (login first)")
        return self.manager

    def _session(self) -> Any:
        if self.session is None:
            raise LookupError("no session (connect first)")
        return self.session

    def _close_quietly(self) -> None:
        # Closing the session deletes a worker it created; the manager closes the rest.
        for thing in (self.session, self.manager):
            if thing is None:
                continue
            try:
                thing.close()
            except Exception as exc:  # a dead server fails the close; fine
                print(f"close failed: {type(exc).__name__}", file=sys.stderr, flush=True)
        self.session = self.manager = None


def missing_client(error: str) -> str:
    """One line: what cannot be imported by which Python, and how to install it there."""
    pip = os.path.join(sys.prefix, "bin", "pip")
    return (
        f"the Core+ client cannot be imported by {sys.executable} ({error}): install it "
        f"into that venv with `{pip} install '{CLIENT_REQUIREMENT}'`, or set python_venv "
        "to a venv that has it (README: Deephaven Enterprise)"
    )


def _read(path: str | None, key: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise Failure("settings", f"{key}: cannot read {path}: {exc.strerror}") from None


def _fetch(url: str, truststore: bytes | None, timeout: float) -> str:
    context = ssl.create_default_context(cadata=truststore.decode()) if truststore else None
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as answer:  # noqa: S310 - http(s) only, checked by the config
            return str(answer.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        kind = "offline" if exc.code >= 500 else "settings"
        raise Failure(kind, f"connection_json_url: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise Failure("offline", f"connection_json_url: {reason}") from None


def python_part(message: str) -> str:
    """A console error without its Java wrapping: the Python traceback as Python prints it."""
    lines = message.splitlines()
    if lines and lines[0].endswith("Error in Python interpreter:"):
        lines = lines[1:]
    return "\n".join(line for line in lines if not line.startswith("\tat ")).strip()


def describe(exc: BaseException) -> dict[str, object]:
    """The error as the daemon classifies it: type, gRPC status code, message."""
    code = None
    message = f"{type(exc).__name__}: {exc}"
    seen: BaseException | None = exc
    while seen is not None:
        status = getattr(seen, "code", None)
        if code is None and callable(status):
            try:
                code = status().name
                details = seen.details() if hasattr(seen, "details") else ""
            except Exception:  # a code() that is no gRPC status is no code
                code, details = None, ""
            if details:
                message = details if seen is exc else f"{message}: {details}"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, Failure):
        kind, message = exc.type, str(exc)
    elif AuthenticationFailedException is not None and isinstance(
        exc, AuthenticationFailedException
    ):
        kind = "unauthorized"
    else:
        kind = type(exc).__name__
    limit = _SCRIPT_MESSAGE_LIMIT if kind == "script" else _MESSAGE_LIMIT
    return {"type": kind, "code": code, "message": message[:limit]}


def serve(stream: Any) -> None:
    worker = Worker()
    for raw in stream:
        req = json.loads(raw)
        handler = getattr(worker, f"op_{req.get('op')}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown op {req.get('op')!r}")
            response = {"id": req.get("id"), "ok": True, "result": handler(req)}
        except Exception as exc:
            response = {"id": req.get("id"), "ok": False, "error": describe(exc)}
        stream.write(json.dumps(response).encode() + b"\n")
        stream.flush()


def main() -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(sys.argv[1])
    with sock, sock.makefile("rwb") as stream:
        serve(stream)
    os._exit(0)  # skip interpreter teardown, where the client's threads can crash or hang


if __name__ == "__main__":
    main()
