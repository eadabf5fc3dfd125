"""What the operator's command line asks beyond one resource at a time: verbs on several
resources by name or pattern, signals, groups and the daemon's pid.

Patterns are expanded here, in the daemon, against the resources and groups it runs
(`config.selection`): one request, and no client ever acts on a stale list. The
single-name routes of `api.app` stay as they were.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response

from supervisor import __version__
from supervisor.api import models
from supervisor.api.errors import ApiError
from supervisor.api.models import reply
from supervisor.api.requests import (
    MAX_PATTERNS,
    ActionsRequest,
    ResourceSignalRequest,
    parse_body,
)
from supervisor.api.spec import ApiRoute, Operation, Param
from supervisor.config.selection import select
from supervisor.errors import DaemonStoppingError
from supervisor.supervision.settings import Snapshot

ACTIONS = ("start", "stop", "restart")

ACT_MANY = Operation(
    "Start, stop or restart every resource the names or patterns select, in one request",
    {202: models.ActionsTaken},
    errors=(400, 404, 503),
    body=ActionsRequest,
    params=(Param("action", "path", "what to do", {"type": "string", "enum": list(ACTIONS)}),),
)
SIGNAL = Operation(
    "Send a signal to a resource's process (not its group)",
    {202: models.SignalSent},
    errors=(400, 404, 409),
    body=ResourceSignalRequest,
    params=(Param("name", "path", "the resource's name (a key of [resources])"),),
)
GROUPS = Operation("Each group's members", {200: models.Groups}, access="read")
DAEMON = Operation("The daemon's pid and version", {200: models.DaemonInfo}, access="read")


class Operated(Protocol):
    """What these routes need from the daemon (part of `api.app.Control`)."""

    @property
    def is_stopping(self) -> bool: ...
    @property
    def events(self) -> Any: ...
    def snapshots(self) -> Sequence[Snapshot]: ...
    def groups(self) -> Mapping[str, Sequence[str]]:
        """Each group's members, as resource names."""

    def command(self, name: str, action: str) -> Snapshot: ...
    def signal(self, name: str, signum: signal.Signals) -> Snapshot:
        """Send `signum` to the process of `name` (NotRunningError if there is none)."""


def selected(control: Operated, patterns: Sequence[str]) -> list[Snapshot]:
    """The resources the patterns name (all of them for none); ResourceNotFoundError
    names a pattern that matches nothing."""
    snaps = list(control.snapshots())
    if not patterns:
        return snaps
    chosen = set(select(patterns, [s.name for s in snaps], control.groups()))
    return [s for s in snaps if s.name in chosen]


def query_patterns(request: Request) -> list[str]:
    """The `name` query parameters (`?name=web&name=db:*`), bounded; 400 otherwise."""
    patterns = request.query_params.getlist("name")
    if len(patterns) > MAX_PATTERNS or not all(0 < len(p) <= 200 for p in patterns):
        raise ApiError(
            400, "bad_request", f"name: at most {MAX_PATTERNS} patterns of 1-200 characters"
        )
    return patterns


def operator_routes(control: Operated) -> list[ApiRoute]:
    """/v1/actions, /v1/resources/{name}/signal, /v1/groups, /v1/daemon."""

    async def act_many(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in ACTIONS:
            raise ApiError(
                404,
                "not_found",
                f"unknown action {action[:40]!r} (use one of: {', '.join(ACTIONS)})",
            )
        body = await parse_body(request, ActionsRequest)
        if control.is_stopping:
            raise DaemonStoppingError("the daemon is stopping")
        names = [s.name for s in selected(control, body.names)]
        seq = control.events.last_seq  # the verbs publish nothing themselves: see supervisor
        taken = [
            models.ActionTaken(name=n, action=action, state=control.command(n, action).state.value)
            for n in names
        ]
        return reply(models.ActionsTaken(action=action, seq=seq, resources=taken), 202)

    async def signal_resource(request: Request) -> Response:
        name = request.path_params["name"]
        body = await parse_body(request, ResourceSignalRequest)
        signum = signal.Signals[body.signal]
        snap = control.signal(name, signum)
        assert snap.pid is not None  # `signal` raises for a resource without a process
        return reply(models.SignalSent(name=name, signal=signum.name, pid=snap.pid), 202)

    async def groups(request: Request) -> Response:
        members = {g: list(m) for g, m in control.groups().items()}
        return reply(models.Groups(groups=members))

    async def daemon(request: Request) -> Response:
        return reply(models.DaemonInfo(pid=os.getpid(), version=__version__))

    return [
        ApiRoute("/v1/actions/{action}", act_many, "POST", ACT_MANY),
        ApiRoute("/v1/resources/{name}/signal", signal_resource, "POST", SIGNAL),
        ApiRoute("/v1/groups", groups, "GET", GROUPS),
        ApiRoute("/v1/daemon", daemon, "GET", DAEMON),
    ]
