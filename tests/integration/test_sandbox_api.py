"""Sandbox environments end to end: a real daemon, real `process` sandboxes, real HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from supervisor.config.load import load_text
from supervisor.errors import ConfigError
from supervisor.runtime.apply import ConfigApplier
from supervisor.runtime.daemon import Daemon
from tests.integration.conftest import run_cli
from tests.integration.test_api import unix
from tests.integration.test_docker import labelled

ENV = """
[environments.box]
backend = "process"
min_ready = {min_ready}
max_size = {max_size}
acquire_timeout = "5s"
lease = "{lease}"
housekeep_interval = "1s"
limits = {{ open_files = 128, cpu_time = "5s" }}
[[environments.box.features]]
kind = "command"
setup_session = ["sh", "-c", "find . -mindepth 1 -delete"]
"""


def env_config(min_ready: int = 1, max_size: int = 2, lease: str = "60s") -> str:
    return ENV.format(min_ready=min_ready, max_size=max_size, lease=lease)


@asynccontextmanager
async def daemon_with(tmp_path: Path, text: str) -> AsyncIterator[Daemon]:
    """A daemon in this process whose reloads read `tmp_path/config.toml`."""
    daemon_toml = (
        f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path}/state"\n'
    )
    path = tmp_path / "config.toml"
    path.write_text(daemon_toml + text)
    daemon = Daemon(
        load_text(path.read_text()),
        registry=CollectorRegistry(),
        loader=lambda: load_text(path.read_text()),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def acquire(client: httpx.AsyncClient, body: dict[str, Any] | None = None, **kw: Any) -> Any:
    return await client.post("/v1/environments/box/sessions", json=body or {}, **kw)


async def until(daemon: Daemon, predicate: Any, timeout: float = 15.0) -> None:
    """Wait (bounded) until `predicate()` holds, re-checking after every bus event."""
    with trio.fail_after(timeout):
        async with daemon.bus.subscribe() as events:
            while not predicate():
                await events.receive()


async def until_ready(daemon: Daemon, count: int, timeout: float = 15.0) -> None:
    env = daemon.sandbox_service.environments["box"]
    await until(daemon, lambda: env.stats()["sandboxes"]["READY"] >= count, timeout)


async def test_acquire_exec_release_over_the_unix_socket(tmp_path: Path) -> None:
    """201 with ids and connection; exec runs in the sandbox dir; release is 204, then 410."""
    async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:
        answer = await acquire(client, {"labels": {"user": "alice"}})
        assert answer.status_code == 201, answer.text
        session = answer.json()
        assert session["environment"] == "box"
        assert session["sandbox_id"].startswith("box/")
        assert session["expires_at"] > session["lease_expires_at"] > 0
        workdir = Path(session["connection"]["workdir"])
        assert workdir.is_dir()
        sid = session["session_id"]

        result = (
            await client.post(
                f"/v1/sessions/{sid}/exec",
                json={"command": ["sh", "-c", "pwd; echo out; echo err >&2; exit 3"]},
            )
        ).json()
        assert result["exit_code"] == 3
        inside = session["connection"]["sandbox_workdir"]  # isolated: seen at /home/sandbox
        assert result["stdout"] == f"{inside}\nout\n"
        assert result["stderr"] == "err\n"
        assert not result["timed_out"]

        script = await client.post(f"/v1/sessions/{sid}/exec", json={"script": "ulimit -n"})
        assert script.json()["stdout"].strip() == "128"  # the environment's rlimit applies

        timed = await client.post(
            f"/v1/sessions/{sid}/exec", json={"command": ["sleep", "30"], "timeout": 0.3}
        )
        assert timed.json()["timed_out"] is True
        assert timed.json()["exit_code"] is None

        assert (await client.post(f"/v1/sessions/{sid}/heartbeat")).status_code == 200
        assert (await client.get(f"/v1/sessions/{sid}")).json()["labels"] == {"user": "alice"}
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204
        gone = await client.get(f"/v1/sessions/{sid}")
        assert gone.status_code == 410
        assert gone.json()["error"]["code"] == "expired"
        assert (await client.delete(f"/v1/sessions/{sid}")).status_code == 204  # idempotent


async def test_the_next_session_starts_clean(tmp_path: Path) -> None:
    """A file left by one session is gone for the next one on the same sandbox."""
    async with daemon_with(tmp_path, env_config(max_size=1)) as daemon, unix(daemon) as client:
        first = (await acquire(client)).json()
        await client.post(
            f"/v1/sessions/{first['session_id']}/exec", json={"command": ["touch", "left-over"]}
        )
        await client.delete(f"/v1/sessions/{first['session_id']}")
        second = (await acquire(client)).json()
        assert second["sandbox_id"] == first["sandbox_id"]
        listing = await client.post(
            f"/v1/sessions/{second['session_id']}/exec", json={"command": ["ls", "-A"]}
        )
        assert listing.json()["stdout"] == ""


async def test_overload_is_503_with_retry_after(tmp_path: Path) -> None:
    """At max_size with nothing free: 503, code overloaded, a Retry-After header."""
    async with daemon_with(tmp_path, env_config(max_size=1)) as daemon, unix(daemon) as client:
        held = await acquire(client)
        assert held.status_code == 201
        refused = await acquire(client, {"wait": 0.2})
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "overloaded"
        assert int(refused.headers["retry-after"]) >= 1
        metrics = (await client.get("/metrics")).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(metrics)
            for s in f.samples
        }
        key = (
            "supervisor_acquire_rejections_total",
            (("environment", "box"), ("reason", "overload")),
        )
        assert samples[key] == 1.0


async def test_idempotency_key_returns_the_same_session(tmp_path: Path) -> None:
    """A retried acquire (even a concurrent one) gets the first session, not a second sandbox."""
    async with daemon_with(tmp_path, env_config(max_size=2)) as daemon, unix(daemon) as client:
        answers: list[httpx.Response] = []

        async def post() -> None:
            answers.append(await acquire(client, headers={"idempotency-key": "retry-1"}))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(post)
        ids = {a.json()["session_id"] for a in answers}
        assert len(ids) == 1
        assert sorted(a.status_code for a in answers) == [200, 200, 201]
        assert daemon.sandbox_service.environments["box"].stats()["active_sessions"] == 1


async def test_a_vanished_client_loses_its_lease_and_its_sandbox(tmp_path: Path) -> None:
    """No heartbeat: the session ends at lease expiry (410 after) and the sandbox is replaced."""
    config = env_config(min_ready=1, max_size=1, lease="1s")
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        session = (await acquire(client)).json()
        env = daemon.sandbox_service.environments["box"]
        await until(daemon, lambda: env.stats()["active_sessions"] == 0, timeout=10)
        answer = await client.post(
            f"/v1/sessions/{session['session_id']}/exec", json={"command": ["true"]}
        )
        assert answer.status_code == 410
        await until_ready(daemon, 1)
        assert env.stats()["sandboxes"]["READY"] == 1
        assert not Path(session["connection"]["workdir"]).exists()  # not reused: removed
        ends = [
            e for e in daemon.bus.replay(0)[0] if e.subject == "session" and e.to_state == "ended"
        ]
        assert ends[-1].reason == "expired"


async def test_a_command_longer_than_the_lease_keeps_its_session(tmp_path: Path) -> None:
    """A 1 s lease and a 2.5 s command with no heartbeat: the command finishes, the
    session stays; then, idle, the lease runs out from the command's end."""
    config = env_config(min_ready=1, max_size=1, lease="1s")
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        answer = await client.post(
            f"/v1/sessions/{sid}/exec", json={"command": ["sleep", "2.5"], "timeout": "30s"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["exit_code"] == 0
        shown = await client.get(f"/v1/sessions/{sid}")
        assert shown.status_code == 200
        assert shown.json()["state"] == "active"
        assert shown.json()["running"] == 0
        env = daemon.sandbox_service.environments["box"]
        await until(daemon, lambda: env.stats()["active_sessions"] == 0, timeout=10)
        assert (await client.get(f"/v1/sessions/{sid}")).status_code == 410


async def test_bad_requests_get_clear_4xx(tmp_path: Path) -> None:
    """Unknown names are 404; malformed bodies are 422 with a message; nothing breaks."""
    async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:
        assert (await client.post("/v1/environments/nope/sessions")).status_code == 404
        assert (await client.get("/v1/environments/nope")).status_code == 404
        assert (await client.get("/v1/sessions/nope")).status_code == 404
        for body in ({"ttl": -1}, {"ttl": "soon"}, {"labels": ["x"]}, {"wait": 1e9}):
            answer = await acquire(client, body)
            assert answer.status_code == 422, body
            assert answer.json()["error"]["message"]
        sid = (await acquire(client)).json()["session_id"]
        for body in ({}, {"command": "ls"}, {"command": []}, {"command": ["ls"], "script": "x"}):
            answer = await client.post(f"/v1/sessions/{sid}/exec", json=body)
            assert answer.status_code == 422, body
        json_type = {"content-type": "application/json"}
        oops = await client.post(f"/v1/sessions/{sid}/exec", content=b"{oops", headers=json_type)
        assert oops.status_code == 400
        listed = (await client.get("/v1/environments")).json()["environments"]
        assert listed[0]["name"] == "box"
        assert listed[0]["active_sessions"] == 1


async def test_reload_resizes_a_pool_in_place(tmp_path: Path) -> None:
    """A changed min_ready/max_size keeps the running sandboxes; a new backend replaces them."""
    async with daemon_with(tmp_path, env_config(min_ready=1, max_size=2)) as daemon:
        await until_ready(daemon, 1)
        env = daemon.sandbox_service.environments["box"]
        first = env.pool.sandboxes()[0]
        path = tmp_path / "config.toml"
        path.write_text(
            path.read_text()
            .replace("min_ready = 1", "min_ready = 3")
            .replace("max_size = 2", "max_size = 4")
        )
        plan = await daemon.reload(dry_run=False)
        assert plan["environments"]["resized"] == ["box"]
        assert daemon.sandbox_service.environments["box"] is env
        await until_ready(daemon, 3)
        assert first.status.value == "READY"  # untouched
        path.write_text(path.read_text().replace("find . -mindepth 1 -delete", "true"))
        plan = await daemon.reload(dry_run=False)
        assert plan["environments"]["recreated"] == ["box"]
        assert first.status.value == "OFFLINE"


async def test_cli_session_commands(tmp_path: Path) -> None:
    """session acquire prints an id; exec passes the exit code through; release ends it."""
    async with daemon_with(tmp_path, env_config()) as daemon:
        assert daemon.api is not None
        sock = str(daemon.api.socket_path)
        env = {**os.environ, "SUPERVISOR_SOCKET": sock}

        def cli(*args: str) -> Any:
            return run_cli(*args, env=env)

        acquired = await trio.to_thread.run_sync(cli, "session", "acquire", "box")
        assert acquired.returncode == 0, acquired.stderr
        sid = acquired.stdout.strip()
        ran = await trio.to_thread.run_sync(
            cli, "session", "exec", sid, "--", "sh", "-c", "echo hi; exit 7"
        )
        assert (ran.returncode, ran.stdout) == (7, "hi\n")
        timed = await trio.to_thread.run_sync(
            cli, "session", "exec", sid, "--timeout", "300ms", "--", "sleep", "30"
        )
        assert timed.returncode == 124
        assert "timed out" in timed.stderr
        status = await trio.to_thread.run_sync(cli, "status")
        assert "box" in status.stdout
        assert (await trio.to_thread.run_sync(cli, "session", "heartbeat", sid)).returncode == 0
        assert (await trio.to_thread.run_sync(cli, "session", "release", sid)).returncode == 0
        again = await trio.to_thread.run_sync(cli, "session", "exec", sid, "--", "true")
        assert again.returncode == 125  # the CLI's own failure, as docker exec's
        assert "ended" in again.stderr


async def test_metrics_and_events_describe_environments(tmp_path: Path) -> None:
    """Gauges per status, session counters, and sandbox/session events on the stream."""
    async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        await client.delete(f"/v1/sessions/{sid}")
        text = (await client.get("/metrics")).text
        assert 'supervisor_environment_status{environment="box",status="ONLINE"} 1.0' in text
        assert 'supervisor_sandboxes{environment="box",status="READY"}' in text
        assert 'supervisor_sessions_ended_total{environment="box",outcome="released"} 1.0' in text
        assert "supervisor_session_acquire_wait_seconds_bucket" in text
        assert sid not in text  # never a session id in a label
        events, _ = daemon.bus.replay(0)
        subjects = {e.subject for e in events}
        assert {"environment", "sandbox", "session"} <= subjects
        assert any(e.name == sid and e.to_state == "ended" for e in events)


async def test_docker_sandboxes_through_the_api(tmp_path: Path) -> None:
    """A docker environment end to end: acquire, exec in the container, release, no leftovers."""
    config = """
[environments.box]
backend = "docker"
min_ready = 1
max_size = 2
docker = { image = "supervisor-test/sandbox:bookworm", memory = "128m" }
"""
    async with daemon_with(tmp_path, config) as daemon, unix(daemon) as client:
        await until_ready(daemon, 1, timeout=60)
        answer = await acquire(client)
        assert answer.status_code == 201, answer.text
        session = answer.json()
        container = session["connection"]["container_id"]
        ran = await client.post(
            f"/v1/sessions/{session['session_id']}/exec",
            json={"command": ["sh", "-c", "pwd; cat /proc/1/cgroup >/dev/null; echo ok"]},
        )
        assert ran.json()["stdout"] == "/work\nok\n"
        assert (await client.delete(f"/v1/sessions/{session['session_id']}")).status_code == 204
        assert daemon.engines is not None
        instance = daemon.engines[None].instance_id
    left = await labelled(instance)
    assert not left, f"left behind: {left} (one was {container})"


async def test_nul_bytes_and_huge_numbers_are_422_and_leak_nothing(tmp_path: Path) -> None:
    """Inputs that used to surface as 500s (and leak two fds each) are refused cleanly."""
    async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:
        sid = (await acquire(client)).json()["session_id"]
        fds = len(os.listdir("/proc/self/fd"))
        for body in ({"script": "echo \x00"}, {"command": ["echo", "a\x00b"]}):
            answer = await client.post(f"/v1/sessions/{sid}/exec", json=body)
            assert answer.status_code == 422
        assert (await acquire(client, {"ttl": 10**400})).status_code == 422
        assert len(os.listdir("/proc/self/fd")) <= fds


async def test_process_sandboxes_do_not_see_the_daemons_environment(tmp_path: Path) -> None:
    """Code in a sandbox gets a minimal environment: no token or password of the daemon's."""
    os.environ["SUPERVISOR_TEST_SECRET"] = "do-not-leak"
    try:
        async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:
            sid = (await acquire(client)).json()["session_id"]
            env = (await client.post(f"/v1/sessions/{sid}/exec", json={"command": ["env"]})).json()
            assert "do-not-leak" not in env["stdout"]
            assert "HOME=" in env["stdout"]
    finally:
        del os.environ["SUPERVISOR_TEST_SECRET"]


async def test_a_reload_with_a_missing_feature_plugin_is_refused(tmp_path: Path) -> None:
    """A plugin that cannot be loaded: the reload is refused, the running pool untouched."""
    async with daemon_with(tmp_path, env_config()) as daemon:
        env = daemon.sandbox_service.environments["box"]
        path = tmp_path / "config.toml"
        path.write_text(
            path.read_text()
            + '[[environments.box.features]]\nkind = "plugin"\nentry_point = "no-such-plugin"\n'
        )
        with pytest.raises(ConfigError) as caught:
            await daemon.reload(dry_run=False)
        assert caught.value.problems[0].path == "environments.box.features.1.entry_point"
        assert "no-such-plugin" in caught.value.problems[0].message
        assert daemon.sandbox_service.environments["box"] is env
        assert env.status.value == "ONLINE"


async def test_a_reload_that_fails_unexpectedly_leaves_the_daemon_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug while applying a reload (here: a raising apply) is a failed reload, counted
    and reported; the reloader and the daemon carry on."""
    async with daemon_with(tmp_path, env_config()) as daemon, unix(daemon) as client:

        async def broken(*args: Any) -> None:
            raise RuntimeError("simulated bug")

        monkeypatch.setattr(ConfigApplier, "apply", broken)
        daemon.request_reload()
        with trio.fail_after(10):
            while daemon.reloader.failure == "":  # noqa: ASYNC110 - no event for this
                await trio.sleep(0.02)
        assert "unexpectedly" in daemon.status_line()
        assert (await client.get("/healthz")).status_code == 200
        text = (await client.get("/metrics")).text
        assert 'supervisor_config_reloads_total{result="failure"} 1.0' in text
