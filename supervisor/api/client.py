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
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

from supervisor.api.transport import Transport, readline
from supervisor.errors import DaemonUnavailableError, RequestError

NDJSON = "application/x-ndjson"


class Client:
    """Talks to one daemon over its unix socket, or over TCP with a bearer token."""

    def __init__(self, transport: Transport) -> None:
        self._http = transport
        self.where = transport.where

    @classmethod
    def connect(
        cls,
        *,
        socket_path: Path | str | None = None,
        url: str | None = None,
        token: str | None = None,
        ca_file: Path | str | None = None,
        timeout: float = 10.0,
    ) -> Client:
        """A client for the unix socket at `socket_path`, or for `url` (+ `token`); an
        https:// URL verifies the daemon's certificate against `ca_file`, else the
        system's trust store."""
        return cls(
            Transport.connect(
                socket_path=socket_path, url=url, token=token, ca_file=ca_file, timeout=timeout
            )
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def abort(self) -> None:
        """Give up on the calls in progress, from any thread: their connections are shut
        down (the daemon sees the client leave), and later calls fail."""
        self._http.abort()

    # ----------------------------------------------------------------------- requests

    def health(self) -> dict[str, Any]:
        return self._http.json("GET", "/healthz")

    def ready(self) -> bool:
        try:
            self._http.json("GET", "/readyz")
        except RequestError as exc:
            if exc.status == 503:
                return False
            raise
        return True

    def resources(self, names: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Every resource, or those the names or patterns select (`web*`, `GROUP:*`, `all`)."""
        query = f"?{urlencode([('name', n) for n in names])}" if names else ""
        resources: list[dict[str, Any]] = self._http.json("GET", f"/v1/resources{query}")[
            "resources"
        ]
        return resources

    def act(self, action: str, names: Sequence[str]) -> dict[str, Any]:
        """Start, stop or restart what the names or patterns select; `seq` is where the
        event stream shows what follows."""
        return self._http.json(
            "POST", f"/v1/actions/{quote(action, safe='')}", {"names": list(names)}
        )

    def signal(self, name: str, signal: str | int) -> dict[str, Any]:
        """Send a signal ("HUP", "USR1", 15) to a running resource's process."""
        return self._http.json(
            "POST", f"/v1/resources/{quote(name, safe='')}/signal", {"signal": signal}
        )

    def groups(self) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = self._http.json("GET", "/v1/groups")["groups"]
        return groups

    def daemon(self) -> dict[str, Any]:
        """The daemon's pid and version."""
        return self._http.json("GET", "/v1/daemon")

    def resource(self, name: str) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/resources/{name}")

    def start(self, name: str) -> dict[str, Any]:
        return self._http.json("POST", f"/v1/resources/{name}/start")

    def stop(self, name: str) -> dict[str, Any]:
        return self._http.json("POST", f"/v1/resources/{name}/stop")

    def restart(self, name: str) -> dict[str, Any]:
        return self._http.json("POST", f"/v1/resources/{name}/restart")

    def reload(self, *, dry_run: bool = False, plan: str | None = None) -> dict[str, Any]:
        """Reload (or plan); `plan`: apply only if this is still the plan's `hash`."""
        body: dict[str, Any] = {"dry_run": dry_run}
        if plan is not None:
            body["plan"] = plan
        # Applying waits for new resources' first start attempts: no read timeout.
        return self._http.json("POST", "/v1/reload", body, long=True)

    def credentials(self, name: str) -> dict[str, Any]:
        """Host, port, auth type and token of a Deephaven resource."""
        return self._http.json("GET", f"/v1/resources/{quote(name, safe='')}/credentials")

    def environments(self) -> list[dict[str, Any]]:
        envs: list[dict[str, Any]] = self._http.json("GET", "/v1/environments")["environments"]
        return envs

    def environment(self, name: str) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/environments/{quote(name, safe='')}")

    def restart_environment(self, name: str) -> dict[str, Any]:
        """Rebuild an environment now (its sessions end); its stats as it restarts."""
        return self._http.json("POST", f"/v1/environments/{quote(name, safe='')}/restart")

    def acquire(
        self,
        environment: str,
        *,
        ttl: float | None = None,
        wait: float | None = None,
        labels: dict[str, str] | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """A new session (or, for a repeated `idempotency_key`, the one already given)."""
        body: dict[str, Any] = {"labels": labels} if labels else {}
        if ttl is not None:
            body["ttl"] = ttl
        if wait is not None:
            body["wait"] = wait
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        # The daemon may hold the request for up to the wait (acquire_timeout by default).
        return self._http.json(
            "POST",
            f"/v1/environments/{quote(environment, safe='')}/sessions",
            body,
            headers=headers,
            long=True,
        )

    def session(self, session_id: str) -> dict[str, Any]:
        return self._http.json("GET", f"/v1/sessions/{quote(session_id, safe='')}")

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        return self._http.json("POST", f"/v1/sessions/{quote(session_id, safe='')}/heartbeat")

    def exec(
        self,
        session_id: str,
        command: list[str] | None = None,
        *,
        script: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> dict[str, Any]:
        """Run a command (argv, no shell) or a script; returns exit_code, stdout, stderr..."""
        body = _exec_body(command, script, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        return self._http.json(
            "POST", f"/v1/sessions/{quote(session_id, safe='')}/exec", body, long=True
        )

    def exec_stream(
        self,
        session_id: str,
        command: list[str] | None = None,
        *,
        script: str | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        stdin: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Run a command or script, yielding frames as its output comes:
        `{"stream": "stdout"|"stderr", "data": text}`, then the last one, the result
        (`exit_code`, `duration_s`, `timed_out`, `truncated`) or `{"error": {...}}`.

        Closing the generator early drops the connection, which kills the command.
        """
        body = _exec_body(command, script, timeout=timeout, env=env, cwd=cwd, stdin=stdin)
        yield from self._ndjson("POST", f"/v1/sessions/{quote(session_id, safe='')}/exec", body)

    def start_command(
        self, session_id: str, command: list[str] | None = None, **options: Any
    ) -> dict[str, Any]:
        """Start a background command (`exec`'s arguments); its handle, at once."""
        body = _exec_body(command, options.pop("script", None), **options)
        body["background"] = True
        return self._http.json("POST", f"/v1/sessions/{quote(session_id, safe='')}/exec", body)

    def commands(self, session_id: str) -> list[dict[str, Any]]:
        """The session's background commands."""
        found: list[dict[str, Any]] = self._http.json("GET", self._commands(session_id))["commands"]
        return found

    def command(self, session_id: str, command_id: str) -> dict[str, Any]:
        """A background command with its output so far."""
        return self._http.json("GET", self._commands(session_id, command_id))

    def follow_command(
        self, session_id: str, command_id: str, since: int = 0
    ) -> Iterator[dict[str, Any]]:
        """A background command's output frames from piece `since`, to its last frame."""
        path = self._commands(session_id, command_id) + f"/output?since={since}"
        yield from self._ndjson("GET", path, None)

    def write_stdin(
        self, session_id: str, command_id: str, data: str, *, close: bool = False
    ) -> None:
        """Write to a background command's stdin; `close` ends it."""
        body = {"data": data, "close": close}
        self._http.request("POST", self._commands(session_id, command_id) + "/stdin", body)

    def signal_command(self, session_id: str, command_id: str, signal: str) -> dict[str, Any]:
        """Send HUP, INT, QUIT, TERM or KILL to a background command's process group."""
        path = self._commands(session_id, command_id) + "/signal"
        return self._http.json("POST", path, {"signal": signal})

    def _commands(self, session_id: str, command_id: str | None = None) -> str:
        path = f"/v1/sessions/{quote(session_id, safe='')}/commands"
        return path if command_id is None else f"{path}/{quote(command_id, safe='')}"

    def _ndjson(
        self, method: str, path: str, body: dict[str, Any] | None
    ) -> Iterator[dict[str, Any]]:
        """Frames of an NDJSON stream, up to its last (one without "stream")."""
        headers = {"accept": NDJSON}
        payload = None if body is None else json.dumps(body).encode()
        if payload is not None:
            headers["content-type"] = "application/json"
        conn = self._http.stream_connection()  # a stream of its own, with no read timeout
        try:
            response = self._http.open_stream(
                conn, path, method=method, body=payload, headers=headers
            )
            while line := readline(response, self.where):
                frame: dict[str, Any] = json.loads(line)
                yield frame
                if "stream" not in frame:
                    return
            raise DaemonUnavailableError(f"the stream from {self.where} ended abruptly")
        finally:
            conn.close()

    def release(self, session_id: str) -> dict[str, Any] | None:
        """End the session; returns a teardown warning, if the daemon reported one."""
        status, raw = self._http.request("DELETE", f"/v1/sessions/{quote(session_id, safe='')}")
        return None if status == 204 or not raw else json.loads(raw)

    def put_files(
        self, session_id: str, path: str, data: bytes | IO[bytes], *, tar: bool = False
    ) -> None:
        """Write `data` as the file `path` in the sandbox, or with `tar` extract it (a tar
        stream) under the directory `path`; a file object is streamed from where it is."""
        if isinstance(data, bytes):
            size = len(data)
        else:
            here = data.tell()
            size = data.seek(0, os.SEEK_END) - here
            data.seek(here)
        headers = {
            "content-type": "application/x-tar" if tar else "application/octet-stream",
            "content-length": str(size),
        }
        self._transfer("PUT", self._files_path(session_id, path), data, headers, None)

    def get_files(self, session_id: str, path: str, out: IO[bytes]) -> bool:
        """Write the file `path` (or a tar of the directory `path`) to `out`; returns
        whether it was a directory."""
        kind = self._transfer("GET", self._files_path(session_id, path), None, {}, out)
        return kind == "application/x-tar"

    def list_files(self, session_id: str, path: str = ".") -> dict[str, Any]:
        """The directory `path`: {"path", "entries": [{name, type, size, mode, mtime}]}."""
        return self._http.json("GET", self._files_path(session_id, path, list="1"))

    @staticmethod
    def _files_path(session_id: str, path: str, **extra: str) -> str:
        query = urlencode({"path": path, **extra})
        return f"/v1/sessions/{quote(session_id, safe='')}/files?{query}"

    def _transfer(
        self,
        method: str,
        path: str,
        body: bytes | IO[bytes] | None,
        headers: dict[str, str],
        out: IO[bytes] | None,
    ) -> str:
        """A file transfer on a connection of its own (no read timeout); the answer's body
        goes to `out`. Returns its content type."""
        conn = self._http.stream_connection()
        try:
            response = self._http.open_stream(conn, path, method=method, body=body, headers=headers)
            try:
                while chunk := response.read(1 << 16):
                    if out is not None:
                        out.write(chunk)
            except (OSError, http.client.HTTPException) as exc:
                raise self._http.failed(exc) from None
            kind: str = response.getheader("content-type", "")
            return kind
        finally:
            conn.close()

    def metrics(self) -> str:
        _, body = self._http.request("GET", "/metrics")
        return body.decode()

    def recent_events(self, since: int = 0) -> dict[str, Any]:
        """The transitions the daemon still keeps after `since`, without following:
        `{"events": [...], "gap": bool}` (gap: some after `since` were already dropped)."""
        return self._http.json("GET", f"/v1/events?{urlencode({'since': since, 'follow': 0})}")

    def events(
        self, since: int | None = None, *, deadline: float | None = None
    ) -> Iterator[dict[str, Any]]:
        """Follow the event stream; yields transitions, and {"gap": ...} markers. With a
        `deadline` (time.monotonic()), raises TimeoutError once it passes."""
        path = "/v1/events" + (f"?{urlencode({'since': since})}" if since is not None else "")
        conn = self._http.stream_connection()  # a stream of its own, connected, no timeout
        try:
            sock = conn.sock  # kept: the response may outlive the connection's reference
            response = self._http.open_stream(conn, path)
            kind = "message"
            while True:
                if deadline is not None and sock is not None:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                if not (line := readline(response, self.where)):
                    break
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

    def logs(
        self, name: str, *, stream: str = "stdout", lines: int | None = None, follow: bool = False
    ) -> Iterator[bytes]:
        """A resource's output as it printed it: its last `lines` lines, then with `follow`
        each piece it prints, until the daemon ends the stream."""
        query = {"stream": stream, "follow": int(follow)}
        query.update({} if lines is None else {"lines": lines})
        conn = self._http.stream_connection()  # a stream of its own, with no read timeout
        try:
            path = f"/v1/resources/{quote(name, safe='')}/logs?{urlencode(query)}"
            response = self._http.open_stream(conn, path)
            while piece := readline(response, self.where, line=False):
                yield piece
        finally:
            conn.close()


def _exec_body(command: list[str] | None, script: str | None, **options: object) -> dict[str, Any]:
    body: dict[str, Any] = {"command": command} if command is not None else {"script": script}
    body.update({key: value for key, value in options.items() if value is not None})
    return body
