"""The HTTP plumbing under `api.client`: a connection over a unix socket, and errors
read from the daemon's answers."""

from __future__ import annotations

import http.client
import json
import socket

from supervisor.errors import RequestError


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
