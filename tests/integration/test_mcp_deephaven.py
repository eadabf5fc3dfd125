"""The Deephaven tools against a real Deephaven server: an agent creates a Community
session, makes a table, reads its schema and rows, and deletes the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.runtime.daemon import Daemon
from tests.integration.test_mcp_stdio import agent, call
from tests.integration.test_sandbox_api import daemon_with, until

pytestmark = pytest.mark.slow

DH_ENV = """
[environments.dh]
backend = "deephaven"
min_ready = 0
max_size = 1
acquire_timeout = "120s"
lease = "60s"
deephaven = { heap = "512m" }
"""


def active(daemon: Daemon) -> int:
    count: int = daemon.sandbox_service.environments["dh"].stats()["active_sessions"]
    return count


async def test_an_agent_makes_a_table_reads_it_and_deletes_the_session(tmp_path: Path) -> None:
    """Create, script, tables, schema, rows, packages, credentials, delete: all as tools."""
    async with daemon_with(tmp_path, DH_ENV) as daemon, agent(tmp_path) as client:
        listed = await call(client, "sessions_list")
        assert listed["sessions"] == []
        assert [e["name"] for e in listed["environments"]] == ["dh"]
        wrong = await client.call_tool("session_community_create", {"environment": "nope"})
        assert wrong.is_error

        created = await call(client, "session_community_create", environment="dh")
        sid = created["session_id"]
        assert (await call(client, "sessions_list"))["sessions"] == [
            {"session_id": sid, "type": "community", "source": "dh"}
        ]
        ran = await call(
            client,
            "session_script_run",
            session_id=sid,
            script=(
                "from deephaven import empty_table\n"
                "squares = empty_table(5).update(['X = i', 'Y = X * X', 'Name = `n` + X'])\n"
                "print('made it')\n"
            ),
        )
        assert ran["success"], ran
        assert ran["stdout"] == "made it\n"
        failed = await call(client, "session_script_run", session_id=sid, script="1/0")
        assert not failed["success"]
        assert "ZeroDivisionError" in failed["stderr"]

        assert (await call(client, "session_tables_list", session_id=sid))["tables"] == ["squares"]
        [schema] = (await call(client, "session_tables_schema", session_id=sid))["schemas"]
        assert schema["table"] == "squares"
        assert schema["size"] == 5
        assert [c["name"] for c in schema["columns"]] == ["X", "Y", "Name"]
        rows = await call(
            client, "session_table_data", session_id=sid, table_name="squares", max_rows=3
        )
        assert rows["rows"] == [
            {"X": 0, "Y": 0, "Name": "n0"},
            {"X": 1, "Y": 1, "Name": "n1"},
            {"X": 2, "Y": 4, "Name": "n2"},
        ]
        assert rows["size"] == 5
        missing = await client.call_tool(
            "session_table_data", {"session_id": sid, "table_name": "nothing"}
        )
        assert missing.is_error
        # The helper scripts left no names in the agent's scope.
        names = await call(
            client,
            "session_script_run",
            session_id=sid,
            script="print(sorted(k for k in globals() if 'mcp' in k))",
        )
        assert names["stdout"] == "[]\n"
        packages = (await call(client, "session_pip_list", session_id=sid))["packages"]
        assert "deephaven-core" in {p["package"].lower().replace("_", "-") for p in packages}
        credentials = await call(client, "session_community_credentials", session_id=sid)
        assert credentials["port"] > 0

        await call(client, "session_community_delete", session_id=sid)
        assert active(daemon) == 0
        assert (await call(client, "sessions_list"))["sessions"] == []
        await until(daemon, lambda: active(daemon) == 0)
