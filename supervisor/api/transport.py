"""The client's wire: kept-alive HTTP/1.1 connections over a unix socket, TCP or TLS.

`Client` (api.client) says what to ask the daemon; `Transport` says how: which
connection, the bearer header, one retry on a kept-alive connection the server closed,
and one error for every way of not getting an answer.

`abort()` may be called from another thread: a caller that gave up on a call (an MCP tool
call cancelled by its agent) shuts the connections down, which wakes the thread blocked
on them and tells the daemon the client left (a streamed exec's command is killed). Each
connection is opened here and checked against the abort under one lock, so a connection
opened while an abort runs is either shut down by it or refused.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import ssl
import threading
import weakref
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from supervisor.errors import DaemonUnavailableError, RequestError


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Transport:
    """How to reach one daemon; `request` and `json` reuse a kept-alive connection."""

    def __init__(self, make: Any, where: str, headers: dict[str, str]) -> None:
        self._make = make
        self._conn: http.client.HTTPConnection | None = None
        self._long: http.client.HTTPConnection | None = None
        self._open: weakref.WeakSet[http.client.HTTPConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._aborted = False
        self.headers = headers
        self.where = where

    @classmethod
    def connect(
        cls,
        *,
        socket_path: Path | str | None = None,
        url: str | None = None,
        token: str | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 10.0,
    ) -> Transport:
        """A client for the unix socket at `socket_path`, or for `url` (+ `token`); an
        https:// URL verifies the daemon's certificate against `ca_file`, else the
        system's trust store."""
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
            headers = {"authorization": f"Bearer {token}"} if token else {}
            host, port = parts.hostname, parts.port
            if parts.scheme == "http":
                if ca_file is not None:
                    raise ValueError("a CA file is for https:// URLs")
                return cls(
                    lambda t=timeout: http.client.HTTPConnection(host, port, timeout=t),
                    url,
                    headers,
                )
            context = ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))
            return cls(
                lambda t=timeout: http.client.HTTPSConnection(
                    host, port, timeout=t, context=context
                ),
                url,
                headers,
            )
        if socket_path is None:
            raise ValueError("give socket_path or url")
        path = str(socket_path)
        return cls(lambda t=timeout: UnixConnection(path, t), f"unix:{path}", {})

    def close(self) -> None:
        for conn in (self._conn, self._long):
            if conn is not None:
                conn.close()
        self._conn = self._long = None

    def abort(self) -> None:
        """Shut down every connection, now and later (thread-safe): calls blocked on one
        fail, and so does every call after."""
        with self._lock:
            self._aborted = True
            socks = [conn.sock for conn in self._open if conn.sock is not None]
        for sock in socks:
            with contextlib.suppress(OSError):  # closed already
                sock.shutdown(socket.SHUT_RDWR)

    def stream_connection(self) -> http.client.HTTPConnection:
        """A connection of its own, with no read timeout (for streams), connected."""
        return self._connected(self._make(None))

    def _connected(self, conn: http.client.HTTPConnection) -> http.client.HTTPConnection:
        """`conn`, connected, unless `abort()` came first."""
        with self._lock:
            self._refuse_if_aborted(conn)
            self._open.add(conn)
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise self.unavailable(exc) from None
        with self._lock:
            self._refuse_if_aborted(conn)
        return conn

    def _refuse_if_aborted(self, conn: http.client.HTTPConnection) -> None:
        if self._aborted:
            conn.close()
            raise DaemonUnavailableError(f"the call to {self.where} was abandoned")

    def open_stream(
        self,
        conn: http.client.HTTPConnection,
        path: str,
        *,
        method: str = "GET",
        body: bytes | IO[bytes] | None = None,
        headers: dict[str, str] | None = None,
    ) -> http.client.HTTPResponse:
        """`method path` on `conn` (a file object `body` is streamed); the response, once
        its status says it is not an error."""
        try:
            conn.request(method, path, body=body, headers={**self.headers, **(headers or {})})
            response = conn.getresponse()
            if response.status >= 400:
                raise request_error(response.status, response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise self.failed(exc) from None
        return response

    def json(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        long: bool = False,
    ) -> dict[str, Any]:
        status, raw = self.request(method, path, body, headers=headers, long=long)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RequestError(status, "bad_response", f"unexpected response from {path}")
        return data

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
        long: bool = False,
    ) -> tuple[int, bytes]:
        """One request; `long` ones (acquire, exec) get a connection with no read timeout."""
        payload = json.dumps(body).encode() if body is not None else None
        headers = {**self.headers, **(headers or {})}
        if payload is not None:
            headers["content-type"] = "application/json"
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
            conn = self._connection(long)
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise self.unavailable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise self.failed(exc) from None
        if response.status >= 400:
            raise request_error(response.status, raw)
        return response.status, raw

    def _connection(self, long: bool) -> http.client.HTTPConnection:
        """The kept-alive connection: one with the read timeout, one without (for calls the
        daemon may hold: acquire waits for a sandbox, exec for its command)."""
        if long:
            if self._long is None:
                self._long = self._connected(self._make(None))
            return self._long
        if self._conn is None:
            self._conn = self._connected(self._make())
        return self._conn

    def failed(self, exc: OSError | http.client.HTTPException) -> DaemonUnavailableError:
        """The error for a call that got no whole answer: the daemon unreachable, or its
        reply cut short or malformed."""
        if isinstance(exc, OSError):
            return self.unavailable(exc)
        return DaemonUnavailableError(
            f"the daemon at {self.where} broke off its answer ({type(exc).__name__})"
        )

    def unavailable(self, exc: OSError) -> DaemonUnavailableError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DaemonUnavailableError(
                f"cannot verify the daemon at {self.where}: {exc.verify_message} (give the "
                "CA that signed its certificate with --ca-file)"
            )
        return DaemonUnavailableError(
            f"cannot reach the daemon at {self.where}: {reason} (is it running?)"
        )


def readline(response: http.client.HTTPResponse, where: str, *, line: bool = True) -> bytes:
    """The next line of a stream (or, `line=False`, whatever has come of it)."""
    try:
        return response.readline() if line else response.read1(1 << 16)
    except TimeoutError:
        raise  # the caller's deadline (`Client.events`): streams have no read timeout
    except (OSError, http.client.HTTPException) as exc:
        raise DaemonUnavailableError(
            f"the stream from {where} ended abruptly ({type(exc).__name__})"
        ) from None


def request_error(status: int, raw: bytes) -> RequestError:
    try:
        body = json.loads(raw)
        error = body["error"]
        return RequestError(
            status,
            error["code"],
            error["message"],
            retryable=error.get("retryable", False),
            body=body,
        )
    except (ValueError, KeyError, TypeError):
        text = raw.decode(errors="replace").strip()[:200]
        return RequestError(
            status, "http_error", text or http.client.responses.get(status, "error")
        )
