"""What every tool module shares: the hints, the error mapping, and input types.

Daemon refusals (`RequestError`) and an unreachable daemon become MCP tool errors whose
message is the daemon's own (it already names what to change); anything else a tool
raises is caught by the SDK and also returned as a tool error, so no input ends the
server. Inputs are validated by the SDK from these annotations before a tool runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

from supervisor.api.client import Client
from supervisor.errors import DaemonUnavailableError, RequestError

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, open_world_hint=False)
ADD = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
CHANGE = ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False)
IDEMPOTENT = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]
SessionId = Annotated[str, Field(min_length=1, max_length=200, description="a session_id")]
Timeout = Annotated[float, Field(gt=0, le=86_400, description="seconds")]


@contextmanager
def refusals() -> Iterator[None]:
    """Daemon refusals and an unreachable daemon, as tool errors with the daemon's message."""
    try:
        yield
    except RequestError as exc:
        raise ToolError(f"{exc.message} ({exc.code})") from None
    except DaemonUnavailableError as exc:
        raise ToolError(str(exc)) from None


def release(client: Client, session: dict[str, Any]) -> None:
    """Release the session an acquire answered (the undo of an acquire that was cancelled
    after the daemon granted it)."""
    client.release(str(session["session_id"]))
