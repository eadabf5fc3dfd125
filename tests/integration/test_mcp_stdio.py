"""`supervisor mcp` end to end: the real MCP client SDK spawns the real command, which
talks to a real daemon (in this process) over its control socket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from supervisor.runtime.daemon import Daemon
from tests.integration.conftest import children_of
from tests.integration.test_sandbox_api import daemon_with, env_config, until

pytestmark = pytest.mark.slow


@asynccontextmanager
async def agent(tmp_path: Path) -> AsyncIterator[Client]:
    """An MCP client connected to `supervisor mcp -c tmp_path/config.toml` over stdio."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "supervisor", "mcp", "-c", str(tmp_path / "config.toml")],
        cwd=os.getcwd(),
    )
    async with Client(params, read_timeout_seconds=30) as client:
        yield client


def active(daemon: Daemon) -> int:
    count: int = daemon.sandbox_service.environments["box"].stats()["active_sessions"]
    return count


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool call that must succeed; its structured result."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def test_an_agent_writes_a_file_runs_it_reads_the_output_and_releases(
    tmp_path: Path,
) -> None:
    """The whole agent loop works through MCP tools, with exec output as progress."""
    async with daemon_with(tmp_path, env_config()) as daemon, agent(tmp_path) as client:
        envs = await call(client, "sandbox_environments")
        [box] = envs["environments"]
        assert (box["name"], box["free"], box["max_size"]) == ("box", 2, 2)

        session = await call(client, "sandbox_acquire", environment="box", labels={"by": "mcp"})
        sid = session["session_id"]
        assert active(daemon) == 1
        program = "import sys\nprint('to stdout')\nprint('to stderr', file=sys.stderr)\n"
        await call(client, "sandbox_write_file", session_id=sid, path="job.py", content=program)

        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        result = await client.call_tool(
            "sandbox_exec",
            {"session_id": sid, "script": "python3 job.py > out.txt; cat out.txt; exit 4"},
            progress_callback=on_progress,
        )
        assert not result.is_error, result.content
        ran = result.structured_content
        assert ran is not None
        assert (ran["exit_code"], ran["stdout"], ran["stderr"]) == (4, "to stdout\n", "to stderr\n")
        assert sorted(m for m in progress if m) == ["to stderr\n", "to stdout\n"]

        read = await call(client, "sandbox_read_file", session_id=sid, path="out.txt")
        assert (read["content"], read["encoding"]) == ("to stdout\n", "utf-8")
        listing = await call(client, "sandbox_list_files", session_id=sid)
        assert {e["name"] for e in listing["entries"]} == {"job.py", "out.txt"}

        await call(client, "sandbox_release", session_id=sid)
        assert active(daemon) == 0
        gone = await client.call_tool("sandbox_exec", {"session_id": sid, "command": ["true"]})
        assert gone.is_error


async def test_background_commands_are_started_read_and_signalled(tmp_path: Path) -> None:
    """A background command answers at once; its output and state are read later."""
    async with daemon_with(tmp_path, env_config()) as daemon, agent(tmp_path) as client:
        sid = (await call(client, "sandbox_acquire", environment="box"))["session_id"]
        started = await call(
            client, "sandbox_command_start", session_id=sid, script="echo begun; exec sleep 60"
        )
        cid = started["command_id"]
        await output_until(client, sid, cid, lambda out: "begun" in out["stdout"])
        await call(client, "sandbox_command_signal", session_id=sid, command_id=cid, signal="KILL")
        done = await output_until(client, sid, cid, lambda out: out["state"] != "running")
        assert done["exit_code"] != 0
        assert active(daemon) == 1


async def output_until(
    client: Client, sid: str, cid: str, predicate: Any, timeout: float = 15.0
) -> dict[str, Any]:
    """Read a background command's output until `predicate` holds (bounded): each read is
    a round trip to the daemon, which is how an agent follows one too."""
    with trio.fail_after(timeout):
        while True:
            out = await call(client, "sandbox_command_output", session_id=sid, command_id=cid)
            if predicate(out):
                return out


async def test_a_client_that_leaves_without_releasing_leaves_no_session(tmp_path: Path) -> None:
    """Closing stdin releases what the MCP session held, long before the lease would."""
    async with daemon_with(tmp_path, env_config(lease="600s")) as daemon:
        async with agent(tmp_path) as client:
            await call(client, "sandbox_acquire", environment="box")
            await call(client, "sandbox_acquire", environment="box")
            assert active(daemon) == 2
        await until(daemon, lambda: active(daemon) == 0, timeout=15)


async def test_a_killed_server_leaks_nothing_once_the_lease_runs_out(tmp_path: Path) -> None:
    """SIGKILL stops the heartbeats, so the daemon ends the session at its lease."""
    async with daemon_with(tmp_path, env_config(lease="4s")) as daemon, agent(tmp_path) as client:
        await call(client, "sandbox_acquire", environment="box")
        # Held past its 4 s lease while the server lives: the heartbeats (every 1.3 s) keep it.
        with trio.move_on_after(6):
            await until(daemon, lambda: active(daemon) == 0, timeout=60)
        assert active(daemon) == 1
        [server] = [p for p in children_of(os.getpid()) if _is_mcp(p)]
        os.kill(server, signal.SIGKILL)
        await until(daemon, lambda: active(daemon) == 0, timeout=15)


def _is_mcp(pid: int) -> bool:
    try:
        return b"mcp" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


async def test_a_disabled_group_has_no_tools_and_control_is_off_by_default(
    tmp_path: Path,
) -> None:
    """Tools of a disabled group are absent; resource control needs resources_control."""
    async with daemon_with(tmp_path, env_config()):
        async with agent(tmp_path) as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert {"sandbox_acquire", "resources_list", "resource_events", "sessions_list"} <= names
        assert "resource_stop" not in names
        config = tmp_path / "config.toml"
        config.write_text(
            config.read_text()
            + "[mcp]\nsandboxes = false\ndeephaven = false\nresources_control = true\n"
        )
        async with agent(tmp_path) as client:
            names = {t.name for t in (await client.list_tools()).tools}
        assert not {n for n in names if n.startswith(("sandbox_", "session"))}
        assert {"resource_start", "resource_stop", "resource_restart"} <= names


async def test_every_tool_says_whether_it_reads_or_destroys(tmp_path: Path) -> None:
    """Each tool carries readOnlyHint and destructiveHint, and a description."""
    async with daemon_with(tmp_path, env_config()):
        config = tmp_path / "config.toml"
        config.write_text(config.read_text() + "[mcp]\nresources_control = true\n")
        async with agent(tmp_path) as client:
            tools = (await client.list_tools()).tools
    for tool in tools:
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is not None, tool.name
        assert tool.annotations.destructive_hint is not None, tool.name
        assert tool.description, tool.name
    readers = {t.name for t in tools if t.annotations and t.annotations.read_only_hint}
    assert "resource_stop" not in readers
    assert "sandbox_environments" in readers


async def test_bad_input_is_a_tool_error_and_the_server_carries_on(tmp_path: Path) -> None:
    """Wrong types, missing choices and daemon refusals come back as tool errors."""
    async with daemon_with(tmp_path, env_config()) as daemon, agent(tmp_path) as client:
        wrong_type = await client.call_tool("sandbox_exec", {"session_id": "x", "command": "ls"})
        assert wrong_type.is_error
        neither = await client.call_tool("sandbox_exec", {"session_id": "x"})
        assert neither.is_error
        assert "exactly one of command" in neither.content[0].text  # type: ignore[union-attr]
        unknown = await client.call_tool("sandbox_acquire", {"environment": "nope"})
        assert unknown.is_error
        assert "nope" in unknown.content[0].text  # type: ignore[union-attr]
        no_session = await client.call_tool(
            "sandbox_read_file", {"session_id": "box-session-0", "path": "x"}
        )
        assert no_session.is_error
        no_resource = await client.call_tool("resource_status", {"name": "ghost"})
        assert no_resource.is_error
        assert "ghost" in no_resource.content[0].text  # type: ignore[union-attr]
        # Still serving, and nothing was left held.
        assert (await call(client, "sandbox_environments"))["environments"]
        assert active(daemon) == 0


async def test_recent_events_are_read_without_following(tmp_path: Path) -> None:
    """resource_events answers at once with kept transitions, filtered by name."""
    async with daemon_with(tmp_path, env_config()), agent(tmp_path) as client:
        everything = (await call(client, "resource_events"))["events"]
        assert everything
        assert [e["seq"] for e in everything] == sorted(e["seq"] for e in everything)
        one = everything[0]["name"]
        mine = (await call(client, "resource_events", name=one, limit=1))["events"]
        assert len(mine) == 1
        assert mine[0]["name"] == one
        assert (await call(client, "resource_events", name="ghost"))["events"] == []


def test_client_commands_never_load_the_mcp_sdk() -> None:
    """`supervisor status` starts without importing the MCP SDK (only `mcp` loads it)."""
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "supervisor",
            "status",
            "--socket",
            "/nonexistent",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    modules = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "supervisor.cli" in modules
    assert {m.split(".")[0] for m in modules} & {"mcp", "mcp_types"} == set()


PRINTER = """
[resources.printer]
kind = "process"
command = ["sh", "-c", "i=0; while [ $i -lt 1500 ]; do i=$((i+1)); printf 'line-%04d %0100d\\\\n' $i 0; done; echo oops >&2; exec sleep 600"]
[resources.quiet]
kind = "process"
command = ["sleep", "600"]
log = { target = "journald" }
"""


async def test_resource_logs_returns_a_bounded_tail_and_no_output_is_a_tool_error(
    tmp_path: Path,
) -> None:
    """resource_logs gives the newest lines of one stream, at most 64 KiB from a line's
    start; a resource that keeps no output, or none at all, is a tool error."""
    async with daemon_with(tmp_path, PRINTER), agent(tmp_path) as client:
        # Each read is a round trip to the daemon, as an agent's would be (bounded).
        with trio.fail_after(30):
            while (
                "oops"
                not in (await call(client, "resource_logs", name="printer", stream="stderr"))[
                    "text"
                ]
            ):
                pass
        few = await call(client, "resource_logs", name="printer", lines=3)
        assert [line[:9] for line in few["text"].splitlines()] == [
            "line-1498",
            "line-1499",
            "line-1500",
        ]
        assert few["truncated"] is False
        many = await call(client, "resource_logs", name="printer", lines=1000)
        text = many["text"]
        assert many["truncated"] is True
        assert len(text.encode()) <= 64 << 10
        assert text.startswith("line-")
        assert text.endswith("line-1500 " + "0" * 100 + "\n")
        assert (await call(client, "resource_logs", name="printer", stream="stderr"))[
            "text"
        ] == "oops\n"

        quiet = await client.call_tool("resource_logs", {"name": "quiet"})
        assert quiet.is_error
        assert "journalctl" in quiet.content[0].text  # type: ignore[union-attr]
        assert "no_output" in quiet.content[0].text  # type: ignore[union-attr]
        ghost = await client.call_tool("resource_logs", {"name": "ghost"})
        assert ghost.is_error
        too_many = await client.call_tool("resource_logs", {"name": "printer", "lines": 10**6})
        assert too_many.is_error


async def test_environments_and_resources_are_readable_as_mcp_resources(tmp_path: Path) -> None:
    """supervisor://environments and supervisor://resources[/NAME] are JSON read live from
    the daemon; an unknown name is resource-not-found; a group that is off has none."""
    async with daemon_with(tmp_path, env_config() + PRINTER), agent(tmp_path) as client:
        uris = {str(r.uri) for r in (await client.list_resources()).resources}
        assert uris == {"supervisor://environments", "supervisor://resources"}
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["supervisor://resources/{name}"]

        async def read(uri: str) -> Any:
            [content] = (await client.read_resource(uri)).contents
            assert content.mime_type == "application/json"
            return json.loads(content.text)  # type: ignore[union-attr]

        [box] = (await read("supervisor://environments"))["environments"]
        assert box["free"] == 2
        await call(client, "sandbox_acquire", environment="box")
        [box] = (await read("supervisor://environments"))["environments"]
        assert box["free"] == 1  # read again from the daemon, not cached
        names = {r["name"] for r in (await read("supervisor://resources"))["resources"]}
        assert names == {"printer", "quiet"}
        assert (await read("supervisor://resources/printer"))["kind"] == "process"
        with pytest.raises(MCPError) as missing:
            await client.read_resource("supervisor://resources/ghost")
        assert missing.value.code == INVALID_PARAMS
        assert "ghost" in missing.value.error.message
    off = "[mcp]\nsandboxes = false\nresources_read = false\n"
    async with daemon_with(tmp_path, env_config() + off), agent(tmp_path) as client:
        assert (await client.list_resources()).resources == []
