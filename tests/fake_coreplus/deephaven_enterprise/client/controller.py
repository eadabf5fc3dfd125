"""Fake of `deephaven_enterprise.client.controller`: the query map and status helpers."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from deephaven_enterprise.client._fake_server import Server

# Values of persistent_query_pb2.PersistentQueryStatusEnum.
STATUSES = {
    "PQS_UNINITIALIZED": 0,
    "PQS_INITIALIZING": 3,
    "PQS_RUNNING": 4,
    "PQS_FAILED": 5,
    "PQS_ERROR": 6,
    "PQS_DISCONNECTED": 7,
    "PQS_STOPPED": 8,
    "PQS_COMPLETED": 9,
}
_NAMES = {v: k for k, v in STATUSES.items()}


def pq_info(pq: dict[str, Any]) -> Any:
    """A PersistentQueryInfoMessage look-alike (only the fields the helper reads)."""
    config = SimpleNamespace(
        serial=pq["serial"], name=pq["name"], scriptLanguage=pq.get("language", "Python")
    )
    state = SimpleNamespace(status=STATUSES[pq.get("status", "PQS_RUNNING")])
    return SimpleNamespace(config=config, state=state)


class ControllerClient:
    def __init__(self, server: Server) -> None:
        self._server = server
        self.cookie: str | None = None

    def map(self) -> dict[int, Any]:
        pqs = [*self._server.rpc("controller_map").get("pqs", []), *self._server.workers()]
        return {pq["serial"]: pq_info(pq) for pq in pqs}

    def ping(self) -> bool:
        if self.cookie is None:
            return False
        self._server.rpc("controller_ping")
        return True

    def make_temporary_config(
        self,
        name: str,
        heap_size_gb: float,
        server: str | None = None,
        extra_jvm_args: list[str] | None = None,
        extra_environment_vars: list[str] | None = None,
        engine: str = "DeephavenCommunity",
        auto_delete_timeout: int | None = 600,
        admin_groups: list[str] | None = None,
        viewer_groups: list[str] | None = None,
    ) -> Any:
        return SimpleNamespace(
            name=name,
            heapSizeGb=heap_size_gb,
            extraJvmArguments=list(extra_jvm_args or []),
            scriptLanguage="Python",
            autoDeleteTimeout=auto_delete_timeout,
            engine=engine,
        )

    def delete_query(self, serial: int) -> None:
        self._server.rpc("delete_query", serial=serial)

    def close(self) -> None:
        self.cookie = None

    @staticmethod
    def status_name(status: int) -> str:
        return _NAMES.get(status, f"UNKNOWN_STATUS({status})")

    @staticmethod
    def is_running(status: int) -> bool:
        return status == STATUSES["PQS_RUNNING"]

    @staticmethod
    def is_terminal(status: int) -> bool:
        return _NAMES.get(status) in {
            "PQS_ERROR",
            "PQS_DISCONNECTED",
            "PQS_STOPPED",
            "PQS_FAILED",
            "PQS_COMPLETED",
        }
