"""What the API answers, as models: every route returns one of these (or an error), so the
API can be described from them (an OpenAPI document is generated from the request models
in `api.requests` and these).

They describe the wire format and nothing else: the JSON is exactly what the routes sent
before the models existed (tests compare it). Optional keys the API leaves out when they
have no value (`deephaven`) are left out here too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.responses import JSONResponse


class Answer(BaseModel):
    """A response body; `model_config` lets the objects it is built from be read."""

    model_config = ConfigDict(frozen=True)

    def json_body(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def reply(
    answer: Answer, status: int = 200, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """The response carrying `answer`."""
    return JSONResponse(answer.json_body(), status_code=status, headers=headers)


class Status(Answer):
    """`/healthz`, `/readyz`."""

    status: Literal["ok", "ready"]


class Resource(Answer):
    """One resource as `status` shows it; never carries a secret."""

    name: str
    kind: str
    state: str
    liveness: str
    detail: str
    restarts: int
    since: float = Field(description="Unix time of the last transition")
    pid: int | None
    container_id: str | None
    endpoint: str | None
    deephaven: str | None = Field(
        default=None, exclude_if=lambda v: v is None, description="a Deephaven full name"
    )


class Resources(Answer):
    resources: list[Resource]


class Credentials(Answer):
    """How to connect to a Deephaven resource: treat it as a secret."""

    host: str
    port: int
    auth_type: str
    token: str | None


class ActionTaken(Answer):
    """`POST /v1/resources/{name}/{action}`: the state right after the verb."""

    name: str
    action: Literal["start", "stop", "restart"]
    state: str


class EnvironmentPlan(Answer):
    added: list[str]
    removed: list[str]
    recreated: list[str]
    resized: list[str]
    unchanged: list[str]


class ReloadPlan(Answer):
    """`POST /v1/reload`: what was (or, with dry_run, would be) done."""

    dry_run: bool
    added: list[str]
    removed: list[str]
    restarted: list[str]
    updated: list[str]
    unchanged: list[str]
    daemon_restart_needed: list[str]
    environments: EnvironmentPlan
    hash: str = Field(
        description="of the running config and the file's: send it back as `plan` to apply "
        "this plan and no other"
    )


class Environment(Answer):
    """One sandbox pool: its status, sandboxes per status, waiters and sessions."""

    name: str
    backend: str
    status: str
    sandboxes: dict[str, int]
    min_ready: int
    max_size: int
    waiters: int
    active_sessions: int
    offline_duration: float
    outage: bool
    error: str | None
    failures: int = Field(description="failed starts in a row (reset by a start that works)")
    retry_in: float | None = Field(description="seconds until the next start attempt")


class Environments(Answer):
    environments: list[Environment]


class Session(Answer):
    """A leased session (times are Unix times)."""

    session_id: str
    sandbox_id: str
    environment: str
    started_at: float
    expires_at: float
    lease_expires_at: float | None
    labels: dict[str, str]
    running: int  # commands in progress: while any runs, the lease cannot run out
    state: Literal["active", "ended"]
    endpoint: str | None = Field(
        default=None,
        exclude_if=lambda v: v is None,
        description="host:port of a sandbox that is a server (deephaven backend)",
    )


class Sessions(Answer):
    """`GET /v1/environments/{env}/sessions`."""

    sessions: list[Session]


class AcquiredSession(Session):
    """`POST /v1/environments/{env}/sessions`: the session and how to reach its sandbox."""

    connection: dict[str, Any]


class ExecResult(Answer):
    """`POST /v1/sessions/{id}/exec`."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    truncated: bool


class FileEntry(Answer):
    """One name in a listed directory."""

    name: str
    type: Literal["file", "dir", "symlink", "other"]
    size: int
    mode: int
    mtime: float


class FileListing(Answer):
    """`GET /v1/sessions/{id}/files?path=...&list=1`."""

    path: str
    entries: list[FileEntry]


class Command(Answer):
    """A background command (`background: true`): what it runs, where it is."""

    command_id: str
    command: list[str] | None = Field(default=None, exclude_if=lambda v: v is None)
    script: str | None = Field(default=None, exclude_if=lambda v: v is None)
    state: Literal["running", "exited", "failed"]
    started_at: float
    exit_code: int | None
    duration_s: float | None
    timed_out: bool
    truncated: bool
    error: str | None


class Commands(Answer):
    """`GET /v1/sessions/{id}/commands`."""

    commands: list[Command]


class CommandOutput(Command):
    """`GET /v1/sessions/{id}/commands/{cid}`: the command and its output so far."""

    stdout: str
    stderr: str


class Released(Answer):
    """`DELETE /v1/sessions/{id}` when a feature failed to clean up (else 204, no body)."""

    released: Literal[True]
    teardown_error: str


class Problem(Answer):
    path: str
    message: str


class ErrorDetail(Answer):
    code: str
    message: str
    retryable: bool
    problems: list[Problem] | None = Field(default=None, exclude_if=lambda v: v is None)


class Error(Answer):
    """Every error: `{"error": {"code", "message", "retryable"}}`."""

    error: ErrorDetail


class Event(Answer):
    """One `transition` event of `/v1/events` (server-sent events, `id: SEQ`)."""

    model_config = ConfigDict(frozen=True, serialize_by_alias=True, validate_by_name=True)

    seq: int
    time: float
    subject: Literal["resource", "environment", "sandbox", "session"]
    name: str
    kind: str
    from_: str = Field(alias="from")
    to: str
    reason: str
    environment: str | None = Field(default=None, exclude_if=lambda v: v is None)
    deephaven: str | None = Field(default=None, exclude_if=lambda v: v is None)
    detail: str | None = Field(default=None, exclude_if=lambda v: v is None)
    attempt: int | None = Field(default=None, exclude_if=lambda v: v is None)
    next_delay: float | None = Field(default=None, exclude_if=lambda v: v is None)


class OutputFrame(Answer):
    """A streamed exec's output, as it comes."""

    stream: Literal["stdout", "stderr"]
    data: str


class ExitFrame(Answer):
    """A streamed exec's last line when the command ran: its result without the output."""

    exit_code: int | None
    duration_s: float
    timed_out: bool
    truncated: bool


class ExecFrame(RootModel[OutputFrame | ExitFrame | Error]):
    """One line of a streamed exec (`application/x-ndjson`); an `Error` ends it too."""

    model_config = ConfigDict(frozen=True)


class ActionsTaken(Answer):
    """`POST /v1/actions/{action}`: the verb applied to every resource the names matched."""

    action: Literal["start", "stop", "restart"]
    seq: int = Field(
        description="the last event's sequence number when the verb was applied: the "
        "transitions it causes come after it (follow /v1/events?since=seq)"
    )
    resources: list[ActionTaken]


class SignalSent(Answer):
    """`POST /v1/resources/{name}/signal`."""

    name: str
    signal: str
    pid: int


class Groups(Answer):
    """`GET /v1/groups`: each group's members, as resource names."""

    groups: dict[str, list[str]]


class DaemonInfo(Answer):
    """`GET /v1/daemon`."""

    pid: int
    version: str


class RecentEvents(Answer):
    """`GET /v1/events?follow=0`: the events the ring keeps after `since`, at once."""

    events: list[Event]
    gap: bool = Field(description="some events after `since` were already dropped")


class ConsoleSignIn(Answer):
    """`/console/session`: what the signed-in browser may do, and its CSRF token."""

    access: Literal["full", "read"]
    csrf: str = Field(description="send it as X-CSRF-Token with every request but GET")


class GlanceMinute(Answer):
    """One minute of the last hour."""

    start: int = Field(description="unix time of the minute's first second")
    restarts: int = Field(description="resource restarts in the minute")
    transitions: int = Field(description="resource state transitions in the minute")
    states: dict[str, int] | None = Field(
        description="resources per state at the minute's end (so far, for the current one); "
        "null when the daemon was not running then"
    )


class Glance(Answer):
    """`GET /v1/glance`: the last 60 minutes, oldest first, the current one last."""

    minutes: list[GlanceMinute]
