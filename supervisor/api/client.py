"""A small synchronous client for the daemon's API, used by the CLI and by programs.

    with Client.connect(socket_path="/run/supervisor-daemon/control.sock") as client:
        for resource in client.resources():
            print(resource["name"], resource["state"])

Built on the standard library's http.client, so `supervisor status` starts in tens of
milliseconds instead of paying for an async HTTP stack it does not use.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from supervisor.errors import DaemonUnavailableError, RequestError


class _UnixConnection(http.client.HTTPConnection):
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


class Client:
    """Talks to one daemon over its unix socket, or over TCP with a bearer token."""

    def __init__(self, make: Any, where: str, headers: dict[str, str]) -> None:
        self._make = make
        self._conn: http.client.HTTPConnection | None = None
        self._headers = headers
        self.where = where

    @classmethod
    def connect(
        cls,
        *,
        socket_path: Path | str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> Client:
        """A client for the unix socket at `socket_path`, or for `url` (+ `token`)."""
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"expected an http:// or https:// URL, got {url!r}")
            kind = (
                http.client.HTTPSConnection
                if parts.scheme == "https"
                else http.client.HTTPConnection
            )
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return cls(lambda t=timeout: kind(parts.hostname, parts.port, timeout=t), url, headers)
        if socket_path is None:
            raise ValueError("give socket_path or url")
        path = str(socket_path)
        return cls(lambda t=timeout: _UnixConnection(path, t), f"unix:{path}", {})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # ----------------------------------------------------------------------- requests

    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> bool:
        try:
            self._json("GET", "/readyz")
        except RequestError as exc:
            if exc.status == 503:
                return False
            raise
        return True

    def resources(self) -> list[dict[str, Any]]:
        resources: list[dict[str, Any]] = self._json("GET", "/v1/resources")["resources"]
        return resources

    def resource(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/resources/{name}")

    def start(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/resources/{name}/start")

    def stop(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/resources/{name}/stop")

    def restart(self, name: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/resources/{name}/restart")

    def reload(self, *, dry_run: bool = False) -> dict[str, Any]:
        return self._json("POST", "/v1/reload", {"dry_run": dry_run})

    def metrics(self) -> str:
        _, body = self._request("GET", "/metrics")
        return body.decode()

    def events(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Follow the event stream; yields transitions, and {"gap": ...} markers."""
        path = "/v1/events" + (f"?{urlencode({'since': since})}" if since is not None else "")
        conn = self._make(None)  # a stream of its own, with no read timeout
        try:
            try:
                conn.request("GET", path, headers=self._headers)
                response = conn.getresponse()
            except OSError as exc:
                raise self._unavailable(exc) from None
            if response.status >= 400:
                raise _request_error(response.status, response.read())
            kind = "message"
            while line := response.readline():
                text = line.decode().rstrip("\r\n")
                if text.startswith("event:"):
                    kind = text[6:].strip()
                elif text.startswith("data:"):
                    data = json.loads(text[5:])
                    yield {"gap": data} if kind == "gap" else data
                elif not text:
                    kind = "message"
        finally:
            conn.close()

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        status, raw = self._request(method, path, body)
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise RequestError(status, "bad_response", f"unexpected response from {path}")
        return data

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, bytes]:
        payload = json.dumps(body).encode() if body is not None else None
        headers = dict(self._headers)
        if payload is not None:
            headers["content-type"] = "application/json"
        for attempt in (1, 2):  # a kept-alive connection the server closed: retry once
            if self._conn is None:
                self._conn = self._make()
            try:
                self._conn.request(method, path, body=payload, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 2:
                    raise self._unavailable(exc) from None
            except OSError as exc:
                self.close()
                raise self._unavailable(exc) from None
        if response.status >= 400:
            raise _request_error(response.status, raw)
        return response.status, raw

    def _unavailable(self, exc: OSError) -> DaemonUnavailableError:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return DaemonUnavailableError(
            f"cannot reach the daemon at {self.where}: {reason} (is it running?)"
        )


def _request_error(status: int, raw: bytes) -> RequestError:
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
