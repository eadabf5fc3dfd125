"""Sandbox tools: environments, sessions, exec, background commands, files.

Each tool is a thin call to the daemon's API through `DaemonLink`; what an agent may do
is exactly what the API allows. Sessions acquired here are held by the MCP session
(`Holds`): heartbeated while it lives, released when it ends. Output handed back to the
agent is capped (`MAX_OUTPUT`, `MAX_FILE`): a model's context is the scarce resource.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from supervisor.mcp.holds import Holds
from supervisor.mcp.link import DaemonLink
from supervisor.mcp.tools import (
    ADD,
    CHANGE,
    IDEMPOTENT,
    READ,
    Name,
    SessionId,
    Timeout,
    refusals,
    release,
)

MAX_OUTPUT = 64 << 10  # characters of stdout / stderr returned per stream
MAX_FILE = 1 << 20  # bytes of a file returned by sandbox_read_file
MAX_PROGRESS_MESSAGE = 1000

Argv = Annotated[
    list[Annotated[str, Field(max_length=65_536)]], Field(min_length=1, max_length=4096)
]
Script = Annotated[str, Field(min_length=1, max_length=1 << 20)]
Path = Annotated[str, Field(min_length=1, max_length=4096)]
Labels = Annotated[
    dict[Annotated[str, Field(max_length=63)], Annotated[str, Field(max_length=256)]],
    Field(max_length=32),
]


def clip(text: str, limit: int = MAX_OUTPUT) -> tuple[str, bool]:
    """`text` within `limit` characters: its head and tail around a marker."""
    if len(text) <= limit:
        return text, False
    half = limit // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut ...]\n{text[-half:]}", True


class Capture:
    """One stream's output as it comes, keeping only what `clip` would return: the head and
    the tail, so a command that prints gigabytes costs this process 64 KiB."""

    def __init__(self, limit: int = MAX_OUTPUT) -> None:
        self.limit = limit
        self.half = limit // 2
        self.head = ""
        self.tail = ""  # up to limit - half: all of a text that fits, with the head
        self.total = 0

    def add(self, data: str) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail = (self.tail + data)[-(self.limit - self.half) :]

    def text(self) -> tuple[str, bool]:
        """The output, clipped as `clip` does; whether anything was cut."""
        if self.total <= self.limit:
            return self.head + self.tail, False
        cut = self.total - 2 * self.half
        tail = self.tail[-self.half :] if self.half else ""
        return f"{self.head}\n[... {cut} characters cut ...]\n{tail}", True


def _one_of(command: list[str] | None, script: str | None) -> None:
    if (command is None) == (script is None):
        raise ToolError("give exactly one of command (an argv list) or script (sh)")


def environment_view(env: dict[str, Any]) -> dict[str, Any]:
    """What an agent needs to pick an environment: is it up, and is there room."""
    sandboxes: dict[str, int] = env.get("sandboxes", {})
    return {
        "name": env["name"],
        "backend": env["backend"],
        "status": env["status"],
        "ready": sandboxes.get("READY", 0),
        "free": max(0, int(env["max_size"]) - int(env["active_sessions"])),
        "max_size": env["max_size"],
        "active_sessions": env["active_sessions"],
        "waiters": env["waiters"],
        "error": env.get("error"),
    }


def add_sandbox_tools(
    server: MCPServer, link: DaemonLink, holds_for: Callable[[Context], Holds | None]
) -> None:
    """Register the sandbox tools on `server`; `holds_for` names the holds of a request's
    MCP session (None: sessionless, the lease alone keeps what it acquires)."""
    add_session_tools(server, link, holds_for)
    add_command_tools(server, link)
    add_file_tools(server, link)


def add_session_tools(
    server: MCPServer, link: DaemonLink, holds_for: Callable[[Context], Holds | None]
) -> None:
    """Environments, acquire, heartbeat, release."""

    @server.tool(annotations=READ)
    async def sandbox_environments() -> dict[str, Any]:
        """List sandbox environments: status, ready sandboxes and free capacity."""
        with refusals():
            envs = await link.call(lambda c: c.environments())
        return {"environments": [environment_view(e) for e in envs]}

    @server.tool(annotations=ADD)
    async def sandbox_acquire(
        environment: Name,
        ctx: Context,
        ttl_seconds: Timeout | None = None,
        wait_seconds: Annotated[float, Field(ge=0, le=3600)] | None = None,
        labels: Labels | None = None,
    ) -> dict[str, Any]:
        """Acquire a sandbox session in an environment. kept_alive: held until released
        or this MCP session ends; else call sandbox_heartbeat before lease_expires_at."""
        holds = holds_for(ctx)
        with refusals():
            session = await link.call(
                lambda c: c.acquire(environment, ttl=ttl_seconds, wait=wait_seconds, labels=labels),
                undo=release,
            )
        if holds is not None:
            holds.hold(session)
        connection = session.get("connection") or {}
        return {
            "session_id": session["session_id"],
            "sandbox_id": session["sandbox_id"],
            "environment": session["environment"],
            "expires_at": session["expires_at"],
            "lease_expires_at": session.get("lease_expires_at"),
            "kept_alive": holds is not None,
            "workdir": connection.get("sandbox_workdir") or connection.get("workdir"),
        }

    @server.tool(annotations=IDEMPOTENT)
    async def sandbox_heartbeat(session_id: SessionId) -> dict[str, Any]:
        """Extend a session's lease (sessions acquired here are kept alive already)."""
        with refusals():
            return await link.call(lambda c: c.heartbeat(session_id))

    @server.tool(annotations=CHANGE)
    async def sandbox_release(session_id: SessionId, ctx: Context) -> dict[str, Any]:
        """Release a session: its sandbox is cleaned and returned to the pool."""
        with refusals():
            warning = await link.call(lambda c: c.release(session_id))
        if (holds := holds_for(ctx)) is not None:
            holds.drop(session_id)
        return {"released": True, **(warning or {})}


def add_command_tools(server: MCPServer, link: DaemonLink) -> None:
    """Exec (streamed as progress) and background commands."""

    @server.tool(annotations=CHANGE)
    async def sandbox_exec(
        session_id: SessionId,
        ctx: Context,
        command: Argv | None = None,
        script: Script | None = None,
        timeout_seconds: Timeout | None = None,
        cwd: Path | None = None,
        stdin: Annotated[str, Field(max_length=1 << 20)] | None = None,
    ) -> dict[str, Any]:
        """Run a command (argv, no shell) or a sh script in the sandbox and wait for it;
        output streams as progress notifications. Returns exit_code, stdout, stderr."""
        _one_of(command, script)
        out = {"stdout": Capture(), "stderr": Capture()}
        last: dict[str, Any] = {}
        frames = 0
        async with link.stream(
            lambda c: c.exec_stream(
                session_id, command, script=script, timeout=timeout_seconds, cwd=cwd, stdin=stdin
            )
        ) as stream:
            async for frame in stream:
                kind = frame.get("stream")
                if kind in out:
                    data = str(frame.get("data", ""))
                    out[kind].add(data)
                    frames += 1
                    await ctx.report_progress(frames, message=data[-MAX_PROGRESS_MESSAGE:])
                else:
                    last = frame
        if "error" in last:
            error = last["error"]
            raise ToolError(f"{error.get('message')} ({error.get('code')})")
        if not last:
            raise ToolError("the exec stream ended without a result")
        stdout, cut_out = out["stdout"].text()
        stderr, cut_err = out["stderr"].text()
        return {
            "exit_code": last.get("exit_code"),
            "stdout": stdout,
            "stderr": stderr,
            "duration_s": last.get("duration_s"),
            "timed_out": last.get("timed_out", False),
            "truncated": bool(last.get("truncated")) or cut_out or cut_err,
        }

    @server.tool(annotations=CHANGE)
    async def sandbox_command_start(
        session_id: SessionId,
        command: Argv | None = None,
        script: Script | None = None,
        timeout_seconds: Timeout | None = None,
        cwd: Path | None = None,
    ) -> dict[str, Any]:
        """Start a background command (argv, or a sh script); returns its command_id at once."""
        _one_of(command, script)
        with refusals():
            return await link.call(
                lambda c: c.start_command(
                    session_id, command, script=script, timeout=timeout_seconds, cwd=cwd
                )
            )

    @server.tool(annotations=READ)
    async def sandbox_command_output(session_id: SessionId, command_id: Name) -> dict[str, Any]:
        """A background command's state, exit code and output so far."""
        with refusals():
            found = await link.call(lambda c: c.command(session_id, command_id))
        for key in ("stdout", "stderr"):
            found[key], cut = clip(str(found.get(key, "")))
            found["truncated"] = bool(found.get("truncated")) or cut
        return found

    @server.tool(annotations=CHANGE)
    async def sandbox_command_signal(
        session_id: SessionId,
        command_id: Name,
        signal: Literal["HUP", "INT", "QUIT", "TERM", "KILL"] = "TERM",
    ) -> dict[str, Any]:
        """Send a signal to a background command's process group."""
        with refusals():
            return await link.call(lambda c: c.signal_command(session_id, command_id, signal))


def add_file_tools(server: MCPServer, link: DaemonLink) -> None:
    """Write, read and list files in the sandbox."""

    @server.tool(annotations=CHANGE)
    async def sandbox_write_file(
        session_id: SessionId,
        path: Path,
        content: Annotated[str, Field(max_length=16 << 20)],
        encoding: Literal["utf-8", "base64"] = "utf-8",
    ) -> dict[str, Any]:
        """Write a file in the sandbox (path relative to its work directory), replacing it."""
        try:
            data = (
                base64.b64decode(content, validate=True)
                if encoding == "base64"
                else content.encode()
            )
        except ValueError:
            raise ToolError("content is not valid base64") from None
        with refusals():
            await link.call(lambda c: c.put_files(session_id, path, data))
        return {"path": path, "size": len(data)}

    @server.tool(annotations=READ)
    async def sandbox_read_file(
        session_id: SessionId,
        path: Path,
        max_bytes: Annotated[int, Field(ge=1, le=MAX_FILE)] = MAX_FILE,
    ) -> dict[str, Any]:
        """Read a file from the sandbox: UTF-8 text, or base64 if it is binary."""
        sink = _Capped(max_bytes)

        def read(c: Any) -> bool:
            try:
                return bool(c.get_files(session_id, path, sink))
            except _Full:
                return False

        with refusals():
            directory = await link.call(read)
        if directory:
            raise ToolError(f"{path} is a directory: use sandbox_list_files")
        data = sink.getvalue()
        try:
            text, encoding = data.decode(), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(data).decode(), "base64"
        return {"path": path, "content": text, "encoding": encoding, "truncated": sink.full}

    @server.tool(annotations=READ)
    async def sandbox_list_files(session_id: SessionId, path: Path = ".") -> dict[str, Any]:
        """List a directory in the sandbox: name, type, size, mode, mtime of each entry."""
        with refusals():
            return await link.call(lambda c: c.list_files(session_id, path))


class _Full(Exception):
    """The file is longer than the caller wants: stop reading it."""


class _Capped(io.BytesIO):
    """A buffer that takes up to `limit` bytes, then stops the transfer."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.full = False

    def write(self, data: Any) -> int:
        room = self.limit - self.tell()
        if len(data) > room:
            super().write(bytes(data[:room]))
            self.full = True
            raise _Full
        return super().write(data)
