"""The Deephaven client helper: one pydeephaven session in a process of its own.

Run as `python -I worker.py SOCKET`: it connects to the daemon's unix socket
and serves one JSON request per line, in order, one JSON response per line. Why a process:
pydeephaven can crash its host (a call into a closed session can segfault) and its calls
have no deadline (a frozen server blocks them forever). Here a crash or a hang costs one
helper, which the daemon kills and replaces; the daemon never runs pydeephaven itself.

Standard library and pydeephaven only: it must not import the daemon's package. Secrets
arrive over the socket (never argv or the environment) and are never echoed back.

Requests: `{"id": N, "op": OP, ...}`; responses: `{"id": N, "ok": true, "result": ...}`
or `{"id": N, "ok": false, "error": {"type", "code", "message"}}`, where `code` is the
gRPC status name found on the exception chain (or null).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc  # type: ignore[import-untyped]
from deephaven_core.proto import (  # type: ignore[import-untyped]
    config_pb2,
    config_pb2_grpc,
    session_pb2,
    session_pb2_grpc,
)
from pydeephaven import Session
from pydeephaven.ticket import ScopeTicket

# Without keepalive a black-holed connection is only noticed by our own deadlines; with
# it, gRPC itself fails calls on a dead transport. No pings without calls: the Deephaven
# server would answer too-frequent idle pings with GOAWAY.
CLIENT_OPTS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.ping_timeout_ms", 10_000),
]


_TLS_FILES = ("tls_root_certs", "client_cert_chain", "client_private_key")


class SettingsError(Exception):
    """The request cannot work with these settings (unreadable certificate, ...)."""


class ScriptError(Exception):
    """The server could not run a script (its message is the server's)."""


_KINDS: dict[type[BaseException], str] = {SettingsError: "settings", ScriptError: "script"}
# Error messages end up in status details: short, but a script's traceback may be longer.
_MESSAGE_LIMIT = 500
_SCRIPT_MESSAGE_LIMIT = 4000


class Worker:
    """Holds at most one session; every method is one request."""

    def __init__(self) -> None:
        self.session: Any = None

    def op_connect(self, req: dict[str, Any]) -> object:
        self._close_quietly()
        files = tls_files(req)
        self.session = Session(
            host=req["host"],
            port=int(req["port"]),
            auth_type=req["auth_type"],
            auth_token=req.get("auth_token") or "",
            never_timeout=True,
            session_type=req.get("session_type", "python"),
            use_tls=bool(req.get("use_tls")),
            tls_root_certs=files["tls_root_certs"],
            client_cert_chain=files["client_cert_chain"],
            client_private_key=files["client_private_key"],
            client_opts=CLIENT_OPTS,
        )
        return None

    def op_ping(self, req: dict[str, Any]) -> object:
        # The configuration-constants call is a real round trip that also refreshes the
        # session token; `is_alive` would make no RPC at all (never_timeout=True).
        session = self._session()
        stub = session.config_service._grpc_app_stub  # noqa: SLF001 - pydeephaven has no public call for it
        session.wrap_rpc(
            stub.GetConfigurationConstants,
            config_pb2.ConfigurationConstantsRequest(),
            timeout=float(req.get("rpc_timeout", 5.0)),
        )
        return None

    def op_probe(self, req: dict[str, Any]) -> object:
        """One authenticated call on a connection of its own, keeping no session.

        The login creates a server-side session, which is closed at once (best effort:
        the server expires a forgotten one anyway).
        """
        files = tls_files(req)
        target = f"{req['host']}:{int(req['port'])}"
        if req.get("use_tls"):
            credentials = grpc.ssl_channel_credentials(
                root_certificates=files["tls_root_certs"],
                private_key=files["client_private_key"],
                certificate_chain=files["client_cert_chain"],
            )
            channel = grpc.secure_channel(target, credentials, CLIENT_OPTS)
        else:
            channel = grpc.insecure_channel(target, CLIENT_OPTS)
        timeout = float(req.get("rpc_timeout", 5.0))
        header = auth_header(req["auth_type"], req.get("auth_token") or "")
        try:
            call = config_pb2_grpc.ConfigServiceStub(channel).GetConfigurationConstants.future(
                config_pb2.ConfigurationConstantsRequest(),
                metadata=[("authorization", header)],
                timeout=timeout,
            )
            bearer = dict(call.initial_metadata()).get("authorization")
            call.result()
            if isinstance(bearer, str) and bearer:
                try:
                    session_pb2_grpc.SessionServiceStub(channel).CloseSession(
                        session_pb2.HandshakeRequest(auth_protocol=0, payload=bearer.encode()),
                        metadata=[("authorization", bearer)],
                        timeout=timeout,
                    )
                except grpc.RpcError as exc:
                    print(f"probe: close failed: {exc.code().name}", file=sys.stderr, flush=True)
        finally:
            channel.close()
        return None

    def op_run_script(self, req: dict[str, Any]) -> object:
        self._session().run_script(req["script"])
        return None

    def op_run_captured(self, req: dict[str, Any]) -> object:
        """Run a program that may bind a result table `req["result"]`; return its JSON."""
        session = self._session()
        response = session.console_service.run_script(req["program"])
        if response.error_message:
            raise ScriptError(python_part(response.error_message))
        name = req["result"]
        changed = [*response.changes.created, *response.changes.updated]
        if not any(field.field_name == name for field in changed):
            return None  # nothing was bound: a silent success
        table = SimpleNamespace(ticket=ScopeTicket.scope_ticket(name))
        chunks = session.flight_service.do_get_table(table).column("chunk").to_pylist()
        return json.loads("".join(chunks))

    def op_close(self, req: dict[str, Any]) -> object:
        self._close_quietly()
        return None

    def op_debug(self, req: dict[str, Any]) -> object:
        """Fault injection for tests: crash, hang, or lose the session behind its back."""
        what = req.get("what")
        if what == "abort":
            os.abort()
        if what == "use_after_close":
            session = self._session()
            session.close()
            session.empty_table(1)  # may raise, may segfault: both must be survivable
        if what == "drop_session":
            # Ends the session on the server while this client still believes in it.
            self._session().session_service.close()
        return None

    def _session(self) -> Any:
        if self.session is None:
            raise LookupError("no session (connect first)")
        return self.session

    def _close_quietly(self) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        try:
            session.close()
        except Exception as exc:  # closing a session on a dead server raises; fine
            print(f"close failed: {type(exc).__name__}", file=sys.stderr, flush=True)


def python_part(message: str) -> str:
    """A console error without its Java wrapping: the Python traceback as Python prints it."""
    lines = message.splitlines()
    if lines and lines[0].endswith("Error in Python interpreter:"):
        lines = lines[1:]
    return "\n".join(line for line in lines if not line.startswith("\tat ")).strip()


def tls_files(req: dict[str, Any]) -> dict[str, bytes | None]:
    """The contents of the TLS files a request names (None where it names none)."""
    files: dict[str, bytes | None] = dict.fromkeys(_TLS_FILES)
    for key in _TLS_FILES:
        path = req.get(key)
        if path is not None:
            try:
                files[key] = Path(path).read_bytes()
            except OSError as exc:
                raise SettingsError(f"{key}: cannot read {path}: {exc.strerror}") from None
    return files


def auth_header(auth_type: str, token: str) -> str:
    """The `authorization` value pydeephaven sends to log in with these credentials."""
    if auth_type == "Anonymous":
        return auth_type
    if auth_type == "Basic":
        return "Basic " + base64.b64encode(token.encode("ascii")).decode("ascii")
    return f"{auth_type} {token}"


def describe(exc: BaseException) -> dict[str, object]:
    """The error as the daemon classifies it: type, gRPC status code, message."""
    code = None
    message = str(exc) if isinstance(exc, ScriptError) else f"{type(exc).__name__}: {exc}"
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
                # A gRPC error's str() is a multi-line repr: its details say it all.
                message = details if seen is exc else f"{message}: {details}"
        seen = seen.__cause__ or seen.__context__
    kind = _KINDS.get(type(exc), type(exc).__name__)
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
    # End of requests: the daemon is done with us. Skip interpreter teardown, where
    # pydeephaven's background threads can crash or hang.
    os._exit(0)


if __name__ == "__main__":
    main()
