"""The fake's stand-in for an Enterprise server: a JSON state file the tests edit.

State keys: `down` (every RPC fails UNAVAILABLE), `frozen` (every RPC blocks), `users`
(name -> password), `keys` (name -> the `private` line of its key file), `pqs` (list of
{serial, name, status, language}), `dropped` (serials whose sessions the server forgot).
Every request is appended to the JSON-lines file `fake_log`, which is also the server's
memory of the workers it made: `add_query` records a new serial (under a lock: helpers run
in parallel), `delete_query` ends it, so a worker outlives the helper that made it, as a
real one does until its auto-delete timeout.
"""

from __future__ import annotations

import enum
import fcntl
import json
import time
from typing import Any


class StatusCode(enum.Enum):
    """The gRPC status codes the fake raises (the real client raises grpc.RpcError)."""

    UNAVAILABLE = 14
    UNAUTHENTICATED = 16


class FakeRpcError(Exception):
    """Quacks like grpc.RpcError: `code()` and `details()`."""

    def __init__(self, code: StatusCode, details: str) -> None:
        super().__init__(details)
        self._code = code
        self._details = details

    def code(self) -> StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class Server:
    def __init__(self, connection: dict[str, Any]) -> None:
        self.state_path = connection["fake_state"]
        self.log_path = connection["fake_log"]

    def state(self) -> dict[str, Any]:
        with open(self.state_path) as f:
            return dict(json.load(f))

    def rpc(self, what: str, **fields: Any) -> dict[str, Any]:
        """One RPC: fails or hangs as the state says, else is logged and returns the state."""
        state = self.state()
        while state.get("frozen"):
            time.sleep(0.05)
            state = self.state()
        if state.get("down"):
            raise FakeRpcError(
                StatusCode.UNAVAILABLE, f"{what}: failed to connect to all addresses"
            )
        self.record(what, **fields)
        return state

    def count(self, what: str) -> int:
        with open(self.log_path) as f:
            return sum(json.loads(line)["event"] == what for line in f)

    def record(self, what: str, **fields: Any) -> None:
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"event": what, **fields}) + "\n")

    def add_query(self, **fields: Any) -> tuple[int, dict[str, Any]]:
        """Record a new worker's query: its serial (1001, 1002, ...) and the state."""
        state = self.rpc("add_query_request")
        with open(self.log_path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # released when closed
            serial = 1001 + self.count("add_query")
            f.write(json.dumps({"event": "add_query", "serial": serial, **fields}) + "\n")
        return serial, state

    def workers(self) -> list[dict[str, Any]]:
        """The workers added and not deleted yet (as `pqs` entries)."""
        with open(self.log_path) as f:
            events = [json.loads(line) for line in f]
        deleted = {e["serial"] for e in events if e["event"] == "delete_query"}
        return [
            {"serial": e["serial"], "name": e["name"], "language": e["language"]}
            for e in events
            if e["event"] == "add_query" and e["serial"] not in deleted
        ]
