"""The operator's command line (`supervisor status/start/stop/restart/signal/pid/reload`),
run as a real process against a real daemon on a private socket."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import trio
from prometheus_client import CollectorRegistry

from supervisor.config.load import load_file
from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.conftest import process_gone, run_cli

CONFIG = """
[daemon]
control_socket = "{tmp}/control.sock"
http = "127.0.0.1:0"
state_dir = "{tmp}/state"

[resources.web]
kind = "process"
command = ["sleep", "100{{instance}}"]
instances = {instances}
stop_timeout = "2s"

[resources.db]
kind = "process"
command = ["sleep", "1000"]
stop_timeout = "2s"

[resources.worker]
kind = "process"
command = ["python3", "-c", "import pathlib, signal, sys; signal.signal(signal.SIGUSR1, lambda *_: sys.exit(7)); pathlib.Path('{tmp}/worker-ready').touch(); signal.pause()"]
startup = {{ exec = ["test", "-f", "{tmp}/worker-ready"], interval = "50ms" }}
stop_timeout = "2s"

[resources.broken]
kind = "process"
command = ["{tmp}/no-such-program"]
autostart = false
restart = {{ intensity = {{ max_restarts = 1, within = "1m" }} }}

[groups]
back = ["db", "worker"]
"""


def write_config(tmp_path: Path, instances: int = 2) -> Path:
    path = tmp_path / "supervisor.toml"
    path.write_text(CONFIG.format(tmp=tmp_path, instances=instances))
    return path


@asynccontextmanager
async def daemon_at(tmp_path: Path) -> AsyncIterator[Daemon]:
    """A daemon in this process, run from the file `write_config` wrote."""
    path = tmp_path / "supervisor.toml"
    daemon = Daemon(load_file(path), config_path=path, registry=CollectorRegistry())
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        yield daemon
        daemon.request_stop()


async def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    sock = str(tmp_path / "control.sock")
    return await trio.to_thread.run_sync(lambda: run_cli(*args, "--socket", sock))


def names_in(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, result.stderr
    return [r["name"] for r in json.loads(result.stdout)["resources"]]


async def test_status_selects_by_name_group_instance_and_glob(tmp_path: Path) -> None:
    """status takes exact names, GROUP:*, NAME:* for instances, shell globs and all."""
    write_config(tmp_path)
    async with daemon_at(tmp_path):
        assert names_in(await cli(tmp_path, "status", "--json", "db")) == ["db"]
        assert names_in(await cli(tmp_path, "status", "--json", "back:*")) == ["db", "worker"]
        assert names_in(await cli(tmp_path, "status", "--json", "web:*")) == ["web:0", "web:1"]
        assert names_in(await cli(tmp_path, "status", "--json", "w*")) == [
            "web:0",
            "web:1",
            "worker",
        ]
        every = await cli(tmp_path, "status", "--json", "all")
        assert names_in(every) == ["web:0", "web:1", "db", "worker", "broken"]
        table = await cli(tmp_path, "status", "web:1")
        assert [line.split()[:3] for line in table.stdout.splitlines()] == [
            ["NAME", "KIND", "STATE"],
            ["web:1", "process", "RUNNING"],
        ]


async def test_an_unknown_name_exits_3_and_suggests_the_closest(tmp_path: Path) -> None:
    """A typo is exit 3 with a did-you-mean, for status and for the verbs (nothing acted)."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        status = await cli(tmp_path, "status", "wrker")
        assert status.returncode == 3
        assert "no resource or group matches 'wrker' (did you mean 'worker'?)" in status.stderr
        stop = await cli(tmp_path, "stop", "db", "bak:*")
        assert stop.returncode == 3
        assert "matches 'bak:*' (did you mean one of: 'back:*'" in stop.stderr
        assert daemon.supervisors["db"].state is State.RUNNING


async def test_verbs_wait_for_the_settled_state_and_print_it(tmp_path: Path) -> None:
    """stop, start and restart return once each resource has settled, and say where."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        stop = await cli(tmp_path, "stop", "web:*", "db")
        assert (stop.returncode, stop.stdout) == (
            0,
            "web:0: STOPPED\nweb:1: STOPPED\ndb: STOPPED\n",
        )
        assert [daemon.supervisors[n].state for n in ("web:0", "web:1", "db")] == [
            State.STOPPED
        ] * 3
        start = await cli(tmp_path, "start", "back")
        assert (start.returncode, start.stdout) == (0, "db: RUNNING\nworker: RUNNING\n")
        before = daemon.supervisors["db"].snapshot().pid
        restart = await cli(tmp_path, "restart", "db")
        assert (restart.returncode, restart.stdout) == (0, "db: RUNNING\n")
        db = daemon.supervisors["db"]
        assert (db.state, db.restarts) == (State.RUNNING, 1)
        assert db.snapshot().pid != before


async def test_a_resource_that_ends_fatal_or_in_backoff_exits_1(tmp_path: Path) -> None:
    """start of a resource that cannot start prints its failed state and exits 1."""
    write_config(tmp_path)
    async with daemon_at(tmp_path):
        result = await cli(tmp_path, "start", "broken", "db")
        assert result.returncode == 1
        lines = result.stdout.splitlines()
        assert lines[0] == "db: RUNNING"
        assert lines[1].split()[:2] in (["broken:", "BACKOFF"], ["broken:", "FATAL"])


async def test_no_wait_answers_with_the_state_before_the_verb(tmp_path: Path) -> None:
    """--no-wait returns as soon as the daemon has the request."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        result = await cli(tmp_path, "stop", "db", "--no-wait")
        assert (result.returncode, result.stdout) == (0, "stop db: accepted (now RUNNING)\n")
        with trio.fail_after(10):
            await daemon.supervisors["db"].wait_for(lambda s: s.state is State.STOPPED)


async def test_the_wait_is_bounded_by_timeout(tmp_path: Path) -> None:
    """A resource that cannot settle in time (its dependency is stopped) exits 1 at --timeout."""
    write_config(tmp_path)
    text = (tmp_path / "supervisor.toml").read_text()
    (tmp_path / "supervisor.toml").write_text(
        text.replace(
            '[resources.db]\nkind = "process"',
            '[resources.db]\nkind = "process"\ndepends_on = ["broken"]',
        )
    )
    async with daemon_at(tmp_path):
        result = await cli(tmp_path, "restart", "db", "--timeout", "1s")
        assert result.returncode == 1
        assert "db: " in result.stdout
        assert "(not settled after 1s)" in result.stdout
        assert "timed out after 1s" in result.stderr


async def test_signal_reaches_the_process(tmp_path: Path) -> None:
    """signal NAME USR1 is delivered: the worker's handler exits 7, and the daemon sees it
    (the worker is RUNNING once its startup probe saw the handler installed)."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        worker = daemon.supervisors["worker"]
        pid = worker.snapshot().pid
        mark = daemon.bus.last_seq
        result = await cli(tmp_path, "signal", "worker", "usr1")
        assert (result.returncode, result.stdout) == (0, f"worker: SIGUSR1 sent to pid {pid}\n")
        with trio.fail_after(10):
            await worker.wait_for(lambda s: s.restarts == 1)
        ended = next(e for e in daemon.bus.replay(mark)[0] if e.name == "worker")
        assert "code 7" in ended.detail


async def test_signal_to_a_stopped_resource_exits_1(tmp_path: Path) -> None:
    """A resource with no process: exit 1 and the reason; a bad signal name is usage (2)."""
    write_config(tmp_path)
    async with daemon_at(tmp_path):
        stopped = await cli(tmp_path, "signal", "broken", "HUP")
        assert stopped.returncode == 1
        assert "broken is STOPPED: there is no process to signal" in stopped.stderr
        assert (await cli(tmp_path, "signal", "db", "NOPE")).returncode == 2


async def test_pid_prints_a_resources_pid_and_alone_the_daemons(tmp_path: Path) -> None:
    """pid NAME prints its process's pid; pid with no name prints the daemon's."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        db = await cli(tmp_path, "pid", "db")
        assert db.stdout == f"{daemon.supervisors['db'].snapshot().pid}\n"
        assert (await cli(tmp_path, "pid")).stdout == f"{os.getpid()}\n"
        as_json = await cli(tmp_path, "pid", "broken", "--json")
        assert (as_json.returncode, json.loads(as_json.stdout)) == (
            1,
            {"name": "broken", "pid": None},
        )


async def test_instances_have_their_index_in_argv_and_environment(tmp_path: Path) -> None:
    """web:1 runs `sleep 1001` with SUPERVISOR_INSTANCE=1 in its environment."""
    write_config(tmp_path)
    async with daemon_at(tmp_path) as daemon:
        pid = daemon.supervisors["web:1"].snapshot().pid
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert cmdline[:2] == [b"sleep", b"1001"]
        assert b"SUPERVISOR_INSTANCE=1" in environ
        assert b"SUPERVISOR_RESOURCE=web:1" in environ


async def test_reload_adds_and_removes_instances(tmp_path: Path) -> None:
    """From 2 to 3 instances adds web:2 only; down to 1 stops web:1 and web:2."""
    write_config(tmp_path, instances=2)
    async with daemon_at(tmp_path) as daemon:
        first = daemon.supervisors["web:0"].snapshot().pid
        write_config(tmp_path, instances=3)
        grown = await cli(tmp_path, "reload")
        assert grown.returncode == 0, grown.stderr
        assert json.loads(grown.stdout)["added"] == ["web:2"]
        assert daemon.supervisors["web:0"].snapshot().pid == first
        with trio.fail_after(10):
            await daemon.supervisors["web:2"].wait_for(lambda s: s.state is State.RUNNING)
        gone = [daemon.supervisors[n].snapshot().pid for n in ("web:1", "web:2")]
        write_config(tmp_path, instances=1)
        shrunk = await cli(tmp_path, "reload")
        assert json.loads(shrunk.stdout)["removed"] == ["web:1", "web:2"]
        assert list(daemon.supervisors)[:2] == ["web:0", "db"]
        for pid in gone:
            assert pid is not None
            await process_gone(pid)
        assert names_in(await cli(tmp_path, "status", "--json", "web:*")) == ["web:0"]


async def test_the_new_routes_answer_errors_in_the_one_shape(tmp_path: Path) -> None:
    """Unknown action, empty names, a bad signal, an unknown pattern: 4xx with a code."""
    write_config(tmp_path)
    async with daemon_at(tmp_path):
        transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "control.sock"))
        async with httpx.AsyncClient(transport=transport, base_url="http://d") as client:
            cases = [
                ("POST", "/v1/actions/explode", {"names": ["db"]}, 404, "not_found"),
                ("POST", "/v1/actions/start", {"names": []}, 422, "unprocessable"),
                ("POST", "/v1/resources/db/signal", {"signal": "NOPE"}, 422, "unprocessable"),
                ("POST", "/v1/resources/zz/signal", {"signal": "HUP"}, 404, "not_found"),
                ("GET", "/v1/resources?name=zz", None, 404, "not_found"),
            ]
            for method, path, body, status, code in cases:
                response = await client.request(method, path, json=body)
                assert response.status_code == status, (path, response.text)
                assert response.json()["error"]["code"] == code
            groups = await client.get("/v1/groups")
            assert groups.json() == {"groups": {"back": ["db", "worker"]}}
