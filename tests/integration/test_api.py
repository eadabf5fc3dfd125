"""The HTTP API on a real unix socket and a real loopback port, against a real daemon."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from supervisor.api.client import Client
from supervisor.api.server import ApiBindError, bind_unix
from supervisor.config.load import load_text
from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.conftest import run_cli

RESOURCES = """
[resources.sleeper]
kind = "process"
command = ["sleep", "1000"]
stop_timeout = "2s"
[resources.other]
kind = "process"
command = ["sleep", "1000"]
"""


@asynccontextmanager
async def running(
    tmp_path: Path,
    resources: str = RESOURCES,
    *,
    token: str | None = None,
    history: int = 10_000,
    state_dir: Path | None = None,
    daemon_extra: str = "",
) -> AsyncIterator[Daemon]:
    """A daemon in this process, on a private socket, state dir and ephemeral port."""
    state = state_dir or tmp_path / "state"
    daemon_toml = f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{state}"\n{daemon_extra}'
    if token is not None:
        (tmp_path / "token").write_text(token + "\n")
        daemon_toml += f'api_token_file = "{tmp_path}/token"\n'
    daemon = Daemon(
        load_text(daemon_toml + resources), registry=CollectorRegistry(), event_history=history
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        yield daemon
        daemon.request_stop()


def unix(daemon: Daemon) -> httpx.AsyncClient:
    assert daemon.api is not None
    transport = httpx.AsyncHTTPTransport(uds=str(daemon.api.socket_path))
    return httpx.AsyncClient(transport=transport, base_url="http://daemon", timeout=10)


def tcp(daemon: Daemon, token: str | None = None) -> httpx.AsyncClient:
    assert daemon.api is not None
    assert daemon.api.http_address is not None
    host, port = daemon.api.http_address
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(base_url=f"http://{host}:{port}", headers=headers, timeout=10)


async def test_health_ready_and_resources(tmp_path: Path) -> None:
    """healthz and readyz answer 200 once started; resources show state, pid and no secret."""
    async with running(tmp_path) as daemon, unix(daemon) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        listing = (await client.get("/v1/resources")).json()["resources"]
        assert [r["name"] for r in listing] == ["sleeper", "other"]
        one = (await client.get("/v1/resources/sleeper")).json()
        assert one["state"] == "RUNNING"
        assert one["liveness"] == "ONLINE"
        assert isinstance(one["pid"], int)
        assert set(one) == {
            "name",
            "kind",
            "state",
            "liveness",
            "detail",
            "restarts",
            "since",
            "pid",
            "container_id",
            "endpoint",
        }


async def test_readyz_is_503_while_starting(tmp_path: Path) -> None:
    """readyz says 503 until every resource has made its first start attempt."""
    gate = tmp_path / "gate"
    slow = f'[resources.slow]\nkind = "process"\ncommand = ["sleep", "1000"]\nstartup = {{ exec = ["test", "-f", "{gate}"], interval = "20ms" }}\n'
    daemon = Daemon(
        load_text(
            f'[daemon]\ncontrol_socket = "{tmp_path}/c.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
            + slow
        ),
        registry=CollectorRegistry(),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon.run)
        with trio.fail_after(10):
            await daemon.api_bound.wait()
        async with unix(daemon) as client:
            response = await client.get("/readyz")
            assert response.status_code == 503
            assert response.json()["error"] == {
                "code": "starting",
                "message": "the daemon is starting",
                "retryable": True,
            }
            gate.touch()
            with trio.fail_after(10):
                await daemon.ready.wait()
            assert (await client.get("/readyz")).status_code == 200
        daemon.request_stop()


async def test_restart_is_accepted_and_happens(tmp_path: Path) -> None:
    """POST restart answers 202 and the resource comes back with a new pid."""
    async with running(tmp_path) as daemon, unix(daemon) as client:
        old = (await client.get("/v1/resources/sleeper")).json()["pid"]
        response = await client.post("/v1/resources/sleeper/restart")
        assert response.status_code == 202
        assert response.json()["action"] == "restart"
        sup = daemon.supervisors["sleeper"]
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.RUNNING and s.restarts == 1)
        assert (await client.get("/v1/resources/sleeper")).json()["pid"] != old
        assert (await client.post("/v1/resources/sleeper/stop")).status_code == 202
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.STOPPED)
        assert (await client.post("/v1/resources/sleeper/start")).status_code == 202
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.RUNNING)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/v1/resources/ghost", None, 404, "not_found"),
        ("POST", "/v1/resources/ghost/restart", None, 404, "not_found"),
        ("POST", "/v1/resources/sleeper/explode", None, 404, "not_found"),
        ("GET", "/v1/nothing-here", None, 404, "not_found"),
        ("DELETE", "/v1/resources", None, 405, "method_not_allowed"),
        ("GET", "/v1/resources/sleeper/restart", None, 405, "method_not_allowed"),
        ("POST", "/v1/reload", b"{not json", 400, "bad_request"),
        ("POST", "/v1/reload", b"[1, 2]", 422, "unprocessable"),
        ("POST", "/v1/reload", b'{"dry_run": "maybe"}', 422, "unprocessable"),
        ("POST", "/v1/reload", b"x" * (2 << 20), 413, "body_too_large"),
        ("GET", "/v1/events?since=-3", None, 400, "bad_request"),
        ("POST", "/v1/reload", b"{}", 501, "not_implemented"),
        ("POST", "/v1/reload", b'{"dry_run": true, "x": 1}', 422, "unprocessable"),
        ("POST", "/v1/reload", b'{"plan": "md5:abc"}', 422, "unprocessable"),
    ],
)
async def test_errors_have_one_shape(
    tmp_path: Path, method: str, path: str, body: bytes | None, status: int, code: str
) -> None:
    """Every error is {"error": {code, message, retryable}} with the right status."""
    async with running(tmp_path) as daemon:
        # A sync client in a thread: the 413 answer arrives before the upload ends, and an
        # async client would leave its body generator unfinished (a ResourceWarning).
        def call() -> httpx.Response:
            with httpx.Client(
                transport=httpx.HTTPTransport(uds=str(daemon.api.socket_path)), base_url="http://d"
            ) as client:  # type: ignore[union-attr]
                headers = {"content-type": "application/json"} if body is not None else {}
                return client.request(method, path, content=body, headers=headers)

        response = await trio.to_thread.run_sync(call)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["message"]
        assert isinstance(error["retryable"], bool)


async def test_tcp_requires_the_token_for_v1_only(tmp_path: Path) -> None:
    """Over TCP, /v1 needs the bearer token; /metrics, /healthz and /readyz stay open."""
    async with running(tmp_path, token="s3cret-token") as daemon:
        async with tcp(daemon) as anonymous:
            missing = await anonymous.get("/v1/resources")
            assert missing.status_code == 401
            assert missing.json()["error"]["message"] == "missing bearer token"
            assert missing.headers["www-authenticate"] == "Bearer"
            assert (await anonymous.get("/healthz")).status_code == 200
            assert (await anonymous.get("/readyz")).status_code == 200
            assert (await anonymous.get("/metrics")).status_code == 200
        async with tcp(daemon, "wrong-token") as wrong:
            assert (await wrong.get("/v1/resources")).json()["error"][
                "message"
            ] == "invalid bearer token"
        async with tcp(daemon, "s3cret-token") as right:
            assert (await right.get("/v1/resources")).status_code == 200


async def test_tcp_without_a_token_file_refuses_v1(tmp_path: Path) -> None:
    """No api_token_file: /v1 over TCP is refused (403) with the way out in the message."""
    async with running(tmp_path) as daemon, tcp(daemon, "anything") as client:
        response = await client.get("/v1/resources")
        assert response.status_code == 403
        assert "api_token_file" in response.json()["error"]["message"]


async def test_metrics_follow_a_killed_child(tmp_path: Path) -> None:
    """After kill -9: transition and restart counters move and the state-set flips back."""
    async with running(tmp_path) as daemon, unix(daemon) as client:
        sup = daemon.supervisors["sleeper"]
        pid = sup.snapshot().pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.restarts == 1 and s.state is State.RUNNING)
        text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "supervisor_build_info",
        "supervisor_resource_state",
        "supervisor_resource_liveness",
        "supervisor_resource_transitions",
        "supervisor_resource_restarts",
        "supervisor_resource_start_duration_seconds",
        "supervisor_liveness_check_duration_seconds",
        "supervisor_config_reloads",
        "supervisor_config_last_reload_success_timestamp_seconds",
        "supervisor_orphans_reaped",
        "supervisor_event_loop_lag_seconds",
        "process_cpu_seconds",
    ):
        assert name in families, name

    def value(family: str, sample: str, **labels: str) -> float:
        for s in families[family].samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
        raise AssertionError(f"no sample {sample}{labels}")

    assert (
        value(
            "supervisor_resource_restarts",
            "supervisor_resource_restarts_total",
            resource="sleeper",
            reason="signal",
        )
        == 1
    )
    assert (
        value(
            "supervisor_resource_transitions",
            "supervisor_resource_transitions_total",
            resource="sleeper",
            from_state="RUNNING",
            to_state="BACKOFF",
        )
        == 1
    )
    assert (
        value(
            "supervisor_resource_state",
            "supervisor_resource_state",
            resource="sleeper",
            state="RUNNING",
        )
        == 1
    )
    assert (
        value(
            "supervisor_resource_state",
            "supervisor_resource_state",
            resource="sleeper",
            state="BACKOFF",
        )
        == 0
    )
    running_states = [
        s
        for s in families["supervisor_resource_state"].samples
        if s.labels["resource"] == "sleeper"
    ]
    assert sum(s.value for s in running_states) == 1
    assert (
        value(
            "supervisor_resource_start_duration_seconds",
            "supervisor_resource_start_duration_seconds_count",
            kind="process",
        )
        >= 3
    )


async def read_events(daemon: Daemon, count: int, since: int | None) -> list[dict[str, Any]]:
    """Read `count` events with the shipped client (in a thread: its reads block)."""
    assert daemon.api is not None

    def follow() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        with Client.connect(socket_path=daemon.api.socket_path) as client:  # type: ignore[union-attr]
            for event in client.events(since=since):
                found.append(event)
                if len(found) == count:
                    break
        return found

    with trio.fail_after(15):
        return await trio.to_thread.run_sync(follow)


async def test_events_replay_then_follow(tmp_path: Path) -> None:
    """since=0 replays the ring in seq order; later transitions arrive live."""
    async with running(tmp_path) as daemon:
        replay = await read_events(daemon, 4, since=0)
        assert [e["seq"] for e in replay] == [1, 2, 3, 4]
        assert set(replay[0]) >= {"seq", "time", "subject", "name", "from", "to", "reason"}
        live: list[dict[str, Any]] = []
        mark = daemon.bus.last_seq  # no race: whatever happens after `mark` is replayed or live

        async def follow() -> None:
            live.extend(await read_events(daemon, 2, since=mark))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            daemon.control.command("other", "stop")
        assert [(e["name"], e["to"]) for e in live] == [("other", "STOPPING"), ("other", "STOPPED")]
        assert live[0]["seq"] == 5


async def test_events_mark_a_gap_when_the_ring_dropped_them(tmp_path: Path) -> None:
    """Asking for events older than the ring holds yields a gap marker first."""
    async with running(tmp_path, history=2) as daemon:
        events = await read_events(daemon, 3, since=0)
    assert events[0] == {"gap": {"since": 0, "first_available": 3}}
    assert [e["seq"] for e in events[1:]] == [3, 4]


async def test_control_socket_is_0660_and_removed_at_exit(tmp_path: Path) -> None:
    """The socket is created 0660 and does not outlive the daemon."""
    async with running(tmp_path) as daemon:
        assert daemon.api is not None
        path = daemon.api.socket_path
        assert path is not None
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert not path.exists()


def test_a_stale_socket_is_replaced_but_a_live_one_is_not(tmp_path: Path) -> None:
    """A socket nobody listens on is replaced; a live daemon's socket is left alone."""
    path = tmp_path / "control.sock"
    stale = bind_unix(path)
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves behind
    live = bind_unix(path)
    live.listen()
    with pytest.raises(ApiBindError, match="another daemon is already listening"):
        bind_unix(path)
    live.close()


async def test_cli_against_a_running_daemon(tmp_path: Path) -> None:
    """status, restart, stop and events work end to end from the command line."""
    async with running(tmp_path) as daemon:
        sock = str(tmp_path / "control.sock")
        status = await trio.to_thread.run_sync(run_cli, "status", "--socket", sock)
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].split() == [
            "NAME",
            "KIND",
            "STATE",
            "LIVENESS",
            "UPTIME",
            "RESTARTS",
            "PID/CONTAINER",
            "DETAIL",
        ]
        assert lines[1].split()[:4] == ["sleeper", "process", "RUNNING", "ONLINE"]
        as_json = await trio.to_thread.run_sync(run_cli, "status", "--json", "--socket", sock)
        assert [r["name"] for r in json.loads(as_json.stdout)["resources"]] == ["sleeper", "other"]
        restart = await trio.to_thread.run_sync(run_cli, "restart", "sleeper", "--socket", sock)
        assert (restart.returncode, restart.stdout) == (0, "sleeper: RUNNING\n")
        sleeper = daemon.supervisors["sleeper"]
        assert (sleeper.restarts, sleeper.state) == (1, State.RUNNING)
        ghost = await trio.to_thread.run_sync(run_cli, "stop", "ghost", "--socket", sock)
        assert ghost.returncode == 3
        assert "no resource or group matches 'ghost'" in ghost.stderr
        env = {**os.environ, "SUPERVISOR_SOCKET": sock}
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "supervisor", "events", "--since", "0"],
            stdout=subprocess.PIPE,
            env=env,
        )
        assert proc.stdout is not None
        output = b""
        with trio.fail_after(15):
            while output.count(b"\n") < 4:
                output += await proc.stdout.receive_some(4096)
            proc.send_signal(signal.SIGINT)  # Ctrl-C ends `events` cleanly
            assert await proc.wait() == 0
        await proc.stdout.aclose()
        first = output.decode().splitlines()[0]
        assert "#1 resource " in first
        assert "STOPPED -> STARTING (autostart)" in first


def test_cli_says_when_the_daemon_is_not_running(tmp_path: Path) -> None:
    """A client command with no daemon behind the socket exits 4 with a clear message."""
    result = run_cli("status", "--socket", str(tmp_path / "nobody.sock"))
    assert result.returncode == 4
    assert "cannot reach the daemon" in result.stderr
    assert "is it running?" in result.stderr
