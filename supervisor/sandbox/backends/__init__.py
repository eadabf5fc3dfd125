"""The sandbox backends: `process`, `docker` and `deephaven` (a module each).

What a backend provides is defined by its consumer, `supervisor.sandbox.instance`
(`Backend`, `Instance`, `ExecResult`, re-exported here for the backends' imports).
"""

from __future__ import annotations

from supervisor.errors import SandboxStateError
from supervisor.sandbox.instance import Backend, ExecResult, Instance

__all__ = ["Backend", "ExecResult", "Instance", "UnavailableBackend"]


class UnavailableBackend:
    """Stands in for a backend that cannot work here; every bring-up is a state error."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason

    async def create(self, sandbox_id: str) -> Instance:
        raise SandboxStateError(self.reason)

    async def reset(self) -> None:
        return None
