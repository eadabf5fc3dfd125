"""The Enterprise session tools over stdio, against the fake Core+ client: an agent creates
a worker, makes a table, reads its schema and rows, and deletes the worker.

The worker is the fake's (see `test_sandbox_deephaven_enterprise`): its console runs the
scripts in the helper's Python, with a stand-in `deephaven` module for tables.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import test_deephaven_enterprise as fake
from tests.integration.test_deephaven_enterprise import FakeSystem
from tests.integration.test_mcp_stdio import agent, call
from tests.integration.test_sandbox_api import daemon_with, until
from tests.integration.test_sandbox_deephaven_enterprise import ent_config, live_workers

pytestmark = pytest.mark.slow

coreplus_venv = fake.coreplus_venv
system = fake.system


async def test_an_agent_creates_a_worker_makes_a_table_reads_it_and_deletes_the_worker(
    system: FakeSystem, coreplus_venv: Path, tmp_path: Path
) -> None:
    """session_enterprise_create is an acquire, the script and table tools work on the
    worker, session_enterprise_delete deletes it."""
    config = ent_config(system, coreplus_venv, tmp_path)
    async with daemon_with(tmp_path, config) as daemon, agent(tmp_path) as client:
        listed = await call(client, "sessions_list")
        assert [(e["name"], e["type"]) for e in listed["environments"]] == [("ent", "enterprise")]
        wrong = await client.call_tool("session_community_create", {"environment": "ent"})
        assert wrong.is_error  # not a Community environment

        created = await call(client, "session_enterprise_create", environment="ent")
        sid = created["session_id"]
        assert (await call(client, "sessions_list"))["sessions"] == [
            {"session_id": sid, "type": "enterprise", "source": "ent"}
        ]
        [worker] = live_workers(system)
        ran = await call(
            client,
            "session_script_run",
            session_id=sid,
            script=(
                "from deephaven import new_table\n"
                "from deephaven.column import int_col, string_col\n"
                "t = new_table([int_col('X', [1, 2, 3]), string_col('Name', ['a', 'b', 'c'])])\n"
                "print('made', t.size)\n"
            ),
        )
        assert ran["success"], ran
        assert ran["stdout"] == "made 3\n"
        assert (await call(client, "session_tables_list", session_id=sid))["tables"] == ["t"]
        [schema] = (await call(client, "session_tables_schema", session_id=sid))["schemas"]
        assert schema["columns"] == [
            {"name": "X", "type": "int"},
            {"name": "Name", "type": "java.lang.String"},
        ]
        data = await call(client, "session_table_data", session_id=sid, table_name="t", max_rows=2)
        assert (data["rows"], data["size"]) == ([{"X": 1, "Name": "a"}, {"X": 2, "Name": "b"}], 3)

        deleted = await call(client, "session_enterprise_delete", session_id=sid)
        assert deleted == {"deleted": True, "session_id": sid}
        await until(daemon, lambda: worker not in live_workers(system))
        assert (await call(client, "sessions_list"))["sessions"] == []
