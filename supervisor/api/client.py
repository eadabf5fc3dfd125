"""A small synchronous client for the daemon's API, used by the CLI and by programs.

with Client.connect(socket_path="/run/supervisor-daemon/control.sock") as client:
    for resource in client.resources():
        print(resource["name"], resource["state"])
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from supervisor.errors import DaemonUnavailableError, RequestError


class Client:
    """Talks to one daemon over its unix socket, or over TCP with a bearer token."""

    def __init__(self, http: httpx.Client, where: str) -> None:
        self._http = http
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
            headers = {"authorization": f"Bearer {token}"} if token else {}
            return cls(
                httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout), url
            )
        if socket_path is None:
            raise ValueError("give socket_path or url")
        transport = httpx.HTTPTransport(uds=str(socket_path))
        http = httpx.Client(transport=transport, base_url="http://supervisor", timeout=timeout)
        return cls(http, f"unix:{socket_path}")

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

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
        return self._json("POST", "/v1/reload", json={"dry_run": dry_run})

    def metrics(self) -> str:
        return self._request("GET", "/metrics").text

    def events(self, since: int | None = None) -> Iterator[dict[str, Any]]:
        """Follow the event stream; yields transitions, and {"gap": ...} markers."""
        params = {"since": str(since)} if since is not None else {}
        try:
            with self._http.stream(
                "GET", "/v1/events", params=params, timeout=httpx.Timeout(10.0, read=None)
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _request_error(response)
                kind = "message"
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = json.loads(line[5:])
                        yield {"gap": data} if kind == "gap" else data
                    elif not line:
                        kind = "message"
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        data = self._request(method, path, **kwargs).json()
        if not isinstance(data, dict):
            raise RequestError(200, "bad_response", f"unexpected response from {path}")
        return data

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None
        if response.status_code >= 400:
            raise _request_error(response)
        return response

    def _unavailable(self, exc: Exception) -> DaemonUnavailableError:
        cause = exc.__cause__ or exc.__context__ or exc
        reason = getattr(cause, "strerror", None) or str(cause) or type(exc).__name__
        return DaemonUnavailableError(
            f"cannot reach the daemon at {self.where}: {reason} (is it running?)"
        )


def _request_error(response: httpx.Response) -> RequestError:
    try:
        body = response.json()
        error = body["error"]
        return RequestError(
            response.status_code,
            error["code"],
            error["message"],
            retryable=error.get("retryable", False),
            body=body,
        )
    except (ValueError, KeyError, TypeError):
        return RequestError(
            response.status_code,
            "http_error",
            response.text.strip()[:200] or response.reason_phrase,
        )
