"""The fake's stand-in for an Enterprise server: a JSON state file the tests edit.

State keys: `down` (every RPC fails UNAVAILABLE), `frozen` (every RPC blocks), `users`
(name -> password), `keys` (name -> the `private` line of its key file), `pqs` (list of
{serial, name, status, language}), `dropped` (serials whose sessions the server forgot).
Every request is appended to the JSON-lines file `fake_log`.
"""

from __future__ import annotations

import enum
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
