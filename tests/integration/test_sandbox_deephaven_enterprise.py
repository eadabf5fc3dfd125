"""`backend = "deephaven-enterprise"` under a real daemon, against the fake Core+ client.

As in `test_deephaven_enterprise`: the helpers are real processes in a throw-away venv whose
only `deephaven_enterprise` is `tests/fake_coreplus`, and `connection.json` is served over
real HTTP. The fake remembers its workers in its request log, so what is checked is the
boundary: which workers the daemon creates, runs scripts in, and deletes.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import trio

from tests.integration import test_deephaven_enterprise as fake
from tests.integration.test_api import unix
from tests.integration.test_daemon import daemon as daemon_process
from tests.integration.test_deephaven_enterprise import PASSWORD, FakeSystem
from tests.integration.test_sandbox_api import daemon_with, until

pytestmark = pytest.mark.slow

# The fake system and the venv that sees the fake client, as that module's tests use them.
coreplus_venv = fake.coreplus_venv
system = fake.system


def ent_config(
    system: FakeSystem, venv: Path, tmp_path: Path, *, min_ready: int = 0, max_size: int = 2
) -> str:
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    return f"""
[resources.prod]
kind = "deephaven-enterprise"
connection_json_url = "{system.url}"
system = "prod"
auth = "password"
username = "alice"
password_file = "{password}"
python_venv = "{venv}"

[environments.ent]
backend = "deephaven-enterprise"
min_ready = {min_ready}
max_size = {max_size}
acquire_timeout = "1s"
housekeep_interval = "1s"
[environments.ent.deephaven_enterprise]
factory = "prod"
heap = "2g"
jvm_args = ["-Dx=1"]
"""


def live_workers(system: FakeSystem) -> set[int]:
    deleted = {r["serial"] for r in system.requests("delete_query")}
    return {r["serial"] for r in system.requests("add_query")} - deleted


async def test_a_session_is_a_new_worker_that_runs_scripts_and_is_deleted_on_release(
    system: FakeSystem, coreplus_venv: Path, tmp_path: Path
) -> None:
    """Acquire creates a worker with the configured heap; a script's prints come back;
    release deletes the worker."""
    config = ent_config(system, coreplus_venv, tmp_path)
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        answer = await client.post("/v1/environments/ent/sessions", json={})
        assert answer.status_code == 201, answer.text
        session = answer.json()
        [added] = system.requests("add_query")
        assert (added["heap_size_gb"], added["jvm_args"]) == (2.0, ["-Dx=1"])
        assert added["name"].startswith("sv-")
        assert "-ent." in added["name"]
        assert session["connection"] == {
            "factory": "prod",
            "worker": added["name"],
            "serial": added["serial"],
        }
        sid = session["session_id"]

        ran = await client.post(
            f"/v1/sessions/{sid}/exec", json={"script": "x = 6 * 7\nprint('answer', x)"}
        )
        assert ran.json()["exit_code"] == 0, ran.text
        assert ran.json()["stdout"] == "answer 42\n"
        again = await client.post(f"/v1/sessions/{sid}/exec", json={"script": "print(x)"})
        assert again.json()["stdout"] == "42\n"  # the console keeps the session's names
        failed = await client.post(f"/v1/sessions/{sid}/exec", json={"script": "1 / 0"})
        assert failed.json()["exit_code"] == 1
        assert "ZeroDivisionError" in failed.json()["stderr"]
        argv = await client.post(f"/v1/sessions/{sid}/exec", json={"command": ["ls"]})
        assert argv.json()["exit_code"] == 127

        assert live_workers(system) == {added["serial"]}
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
        await until(daemon, lambda: not live_workers(system))


async def test_max_size_caps_the_workers(
    system: FakeSystem, coreplus_venv: Path, tmp_path: Path
) -> None:
    """With max_size workers in sessions, the next acquire is refused (503), none is made."""
    config = ent_config(system, coreplus_venv, tmp_path, max_size=1)
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        first = await client.post("/v1/environments/ent/sessions", json={})
        assert first.status_code == 201, first.text
        second = await client.post("/v1/environments/ent/sessions", json={})
        assert second.status_code == 503, second.text
        assert len(system.requests("add_query")) == 1
        await client.delete(f"/v1/sessions/{first.json()['session_id']}")
        third = await client.post("/v1/environments/ent/sessions", json={})
        assert third.status_code == 201, third.text  # the freed slot makes a new worker
        assert len(live_workers(system)) == 1


async def test_a_killed_daemons_workers_are_deleted_at_the_next_start(
    system: FakeSystem, coreplus_venv: Path, tmp_path: Path
) -> None:
    """After SIGKILL the workers outlive the daemon; its next start deletes them, and only
    them (the new run's warm worker stays)."""
    config = "[daemon]\n" + ent_config(system, coreplus_venv, tmp_path, min_ready=1)
    async with daemon_process(tmp_path, config) as first:
        created = await first.until_log("enterprise_worker_created")
        first.proc.send_signal(signal.SIGKILL)
        await first.proc.wait()
    old = created["serial"]
    assert live_workers(system) == {old}  # nobody deleted it
    async with daemon_process(tmp_path, config) as second:
        reaped = await second.until_log("enterprise_worker_reaped")
        assert reaped["serial"] == old
        new = (await second.until_log("enterprise_worker_created"))["serial"]
        assert live_workers(system) == {new}
        second.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            assert await second.proc.wait() == 0
    assert not live_workers(system)  # an orderly stop deletes its workers
