"""Enterprise (Core+) factories and sessions under the real supervisor, against a fake client.

No Enterprise server can run here: the helper processes are real, but they run in a
throw-away venv whose only `deephaven_enterprise` is the fake in `tests/fake_coreplus`
(see its README), and `connection.json` is served over real HTTP. What is verified is the
boundary the daemon owns: which client calls it makes, with which arguments, and how
every outcome maps to states and liveness.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import structlog
import trio

from supervisor.config.deephaven_enterprise import DeephavenEnterpriseConfig
from supervisor.config.types import RestartConfig
from supervisor.launchers.local import LocalLauncher
from supervisor.resources.deephaven_enterprise import (
    EnterpriseFactoryResource,
    EnterpriseSessionResource,
)
from supervisor.supervision.bus import EventBus
from supervisor.supervision.settings import Settings
from supervisor.supervision.states import Liveness, State
from supervisor.supervision.supervisor import ResourceSupervisor
from tests.integration.conftest import Running, process_gone

FAKE = Path(__file__).resolve().parent.parent / "fake_coreplus"
PASSWORD = "correct-horse-battery"
FAST_LIVENESS = {"interval": "200ms", "timeout": "2s", "failures": 2}
PRIVATE_KEY = "user alice\noperateas alice\npublic AAAA\nprivate BBBB\n"


@pytest.fixture(scope="module")
def coreplus_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv whose Python sees the fake client (and nothing of the daemon's venv)."""
    venv = tmp_path_factory.mktemp("coreplus") / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    purelib = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.strip()
    (Path(purelib) / "fake_coreplus.pth").write_text(f"{FAKE}\n")
    return venv


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class FakeSystem:
    """One fake Enterprise system: its state file, request log and connection.json URL."""

    root: Path
    url: str

    def set(self, **changes: Any) -> None:
        state = json.loads((self.root / "state.json").read_text())
        state.update(changes)
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(state))
        tmp.replace(self.root / "state.json")  # atomic: the helper never reads half a file

    def requests(self, event: str) -> list[dict[str, Any]]:
        lines = (self.root / "log.jsonl").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[FakeSystem]:
    root = tmp_path / "system"
    root.mkdir()
    connection = {
        "auth_host": ["127.0.0.1"],
        "auth_port": 9031,
        "controller_host": "127.0.0.1",
        "controller_port": 20126,
        "fake_state": str(root / "state.json"),
        "fake_log": str(root / "log.jsonl"),
    }
    (root / "iris").mkdir()
    (root / "iris" / "connection.json").write_text(json.dumps(connection))
    (root / "log.jsonl").touch()
    state = {
        "users": {"alice": PASSWORD},
        "keys": {"alice": "BBBB"},
        "pqs": [
            {"serial": 7, "name": "Risk", "status": "PQS_RUNNING"},
            {"serial": 8, "name": "Stopped", "status": "PQS_STOPPED"},
        ],
    }
    (root / "state.json").write_text(json.dumps(state))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        yield FakeSystem(root, f"http://127.0.0.1:{port}/iris/connection.json")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def enterprise(**fields: Any) -> DeephavenEnterpriseConfig:
    return DeephavenEnterpriseConfig.model_validate({"kind": "deephaven-enterprise", **fields})


@pytest.fixture
def factory_config(
    system: FakeSystem, coreplus_venv: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("DH_ENTERPRISE_PASSWORD", PASSWORD)
    return {
        "connection_json_url": system.url,
        "system": "prod",
        "auth": "password",
        "username": "alice",
        "password_env": "DH_ENTERPRISE_PASSWORD",
        "python_venv": str(coreplus_venv),
        "liveness": FAST_LIVENESS,
        "stop_timeout": "2s",
    }


def settings_of(config: DeephavenEnterpriseConfig) -> Settings:
    restart = RestartConfig().merged(config.restart)
    return Settings(restart, config.start_timeout, config.stop_timeout, config.autostart)


@asynccontextmanager
async def supervised(
    launcher: LocalLauncher,
    factory: dict[str, Any],
    sessions: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[
    tuple[Running, dict[str, EnterpriseFactoryResource | EnterpriseSessionResource]]
]:
    """A factory `dh` and its `sessions` under real supervisors, started in order."""
    bus = EventBus()
    factory_resource = EnterpriseFactoryResource("dh", enterprise(**factory), launcher)
    resources: dict[str, EnterpriseFactoryResource | EnterpriseSessionResource] = {
        "dh": factory_resource
    }
    sups = {
        "dh": ResourceSupervisor(
            "dh", factory_resource, settings_of(factory_resource.config), bus=bus
        )
    }
    for name, fields in (sessions or {}).items():
        config = enterprise(factory="dh", liveness=FAST_LIVENESS, stop_timeout="2s", **fields)
        resources[name] = EnterpriseSessionResource(name, config, factory_resource, launcher)
        sups[name] = ResourceSupervisor(
            name, resources[name], settings_of(config), bus=bus, depends_on=[sups["dh"]]
        )
    running = Running(sups, bus)
    bus.add_listener(running.events.append)
    async with trio.open_nursery() as nursery:
        for sup in sups.values():
            nursery.start_soon(sup.serve)
        yield running, resources
        with trio.fail_after(30):
            for sup in reversed(sups.values()):
                await sup.stop_and_wait()
        nursery.cancel_scope.cancel()


def states(run: Running, name: str) -> list[str]:
    return [e.to_state for e in run.of(name)]


# ---------------------------------------------------------------------------- factory


async def test_factory_logs_in_and_its_ping_keeps_it_online(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """A factory logs in with the password from its variable and is ONLINE while pings pass."""
    with structlog.testing.capture_logs() as logs:
        async with supervised(launcher, factory_config) as (run, resources):
            await run.entered("dh", State.RUNNING)
            await run.until("dh", lambda s: s.checks >= 3)
            assert run["dh"].liveness is Liveness.ONLINE
            assert str(resources["dh"].identity) == "enterprise:factory:prod"
    assert [r["user"] for r in system.requests("authenticate_by_password")] == ["alice"]
    assert len(system.requests("auth_ping")) >= 3
    assert PASSWORD not in repr(logs) + repr(run.events)


async def test_private_key_login(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any], tmp_path: Path
) -> None:
    """auth = "private_key" logs in with the key file's user."""
    (tmp_path / "priv-alice.base64.txt").write_text(PRIVATE_KEY)
    fields = {k: v for k, v in factory_config.items() if k not in ("username", "password_env")}
    fields.update(auth="private_key", private_key_file=str(tmp_path / "priv-alice.base64.txt"))
    async with supervised(launcher, fields) as (run, _):
        await run.entered("dh", State.RUNNING)
    assert [r["user"] for r in system.requests("authenticate_by_key")] == ["alice"]


async def test_failed_pings_restart_the_factory(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """A system that stops answering fails its pings: liveness restart, back when it answers."""
    async with supervised(launcher, factory_config) as (run, _):
        await run.entered("dh", State.RUNNING)
        system.set(down=True)
        backoff = await run.entered("dh", State.BACKOFF)
        assert (backoff.reason, backoff.restart) == ("liveness", True)
        assert "OFFLINE [UNAVAILABLE]" in backoff.detail
        system.set(down=False)
        await run.entered("dh", State.RUNNING, count=2)
        assert run["dh"].liveness is Liveness.ONLINE


async def test_a_frozen_system_is_detected_within_the_liveness_timeout(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """A ping that never answers costs the helper (killed at the deadline), then a restart."""
    factory_config["liveness"] = {"interval": "200ms", "timeout": "1s", "failures": 1}
    async with supervised(launcher, factory_config) as (run, _):
        await run.entered("dh", State.RUNNING)
        helper = run["dh"].snapshot().pid
        assert helper is not None
        frozen_at = trio.current_time()
        system.set(frozen=True)
        stopping = await run.entered("dh", State.STOPPING)
        assert stopping.reason == "liveness"
        assert trio.current_time() - frozen_at < 0.2 + 1.0 + 1.0
        await process_gone(helper)
        system.set(frozen=False)
        await run.entered("dh", State.RUNNING, count=2)


async def test_wrong_password_is_fatal_unauthorized_without_a_hot_loop(
    launcher: LocalLauncher,
    system: FakeSystem,
    factory_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A rejected password is FATAL with liveness UNAUTHORIZED after one attempt."""
    monkeypatch.setenv("DH_ENTERPRISE_PASSWORD", "not-the-password")
    with structlog.testing.capture_logs() as logs:
        async with supervised(launcher, factory_config) as (run, _):
            fatal = await run.entered("dh", State.FATAL)
            assert states(run, "dh") == ["STARTING", "FATAL"]
            assert (fatal.reason, fatal.next_delay) == (
                "unauthorized",
                RestartConfig().fatal_retry_after,
            )
            assert run["dh"].liveness is Liveness.UNAUTHORIZED
    assert "not-the-password" not in repr(logs) + repr(run.events)


async def test_unreachable_connection_json_is_offline_then_backoff(
    launcher: LocalLauncher, factory_config: dict[str, Any]
) -> None:
    """Nothing serving connection.json: the start fails as OFFLINE and backs off."""
    factory_config["connection_json_url"] = "http://127.0.0.1:9/iris/connection.json"
    async with supervised(launcher, factory_config) as (run, _):
        backoff = await run.entered("dh", State.BACKOFF)
        assert backoff.reason == "start_failed"
        assert backoff.detail.startswith("OFFLINE: login: connection_json_url:")


async def test_missing_venv_is_misconfigured(
    launcher: LocalLauncher, factory_config: dict[str, Any], tmp_path: Path
) -> None:
    """A python_venv without a Python is FATAL/MISCONFIGURED, naming the key."""
    factory_config["python_venv"] = str(tmp_path / "nowhere")
    async with supervised(launcher, factory_config) as (run, _):
        fatal = await run.entered("dh", State.FATAL)
        assert fatal.detail.startswith("python_venv: no Python at")
        assert run["dh"].liveness is Liveness.MISCONFIGURED


async def test_a_missing_client_is_one_line_fatal_and_retried_at_the_policys_pace(
    launcher: LocalLauncher, factory_config: dict[str, Any], tmp_path: Path
) -> None:
    """A venv without the Core+ client: FATAL/MISCONFIGURED with one line saying what to
    install where, no traceback logged, and tried again only after `fatal_retry`."""
    bare = tmp_path / "bare"
    base = getattr(sys, "_base_executable", sys.executable)
    with trio.fail_after(60):
        await trio.run_process([base, "-m", "venv", "--without-pip", str(bare)])
    factory_config["python_venv"] = str(bare)
    factory_config["restart"] = {"fatal_retry": "1s"}
    with structlog.testing.capture_logs() as logs:
        async with supervised(launcher, factory_config) as (run, _):
            first = await run.entered("dh", State.FATAL)
            second = await run.entered("dh", State.FATAL, count=2)
            assert run["dh"].liveness is Liveness.MISCONFIGURED
    assert states(run, "dh")[:4] == ["STARTING", "FATAL", "STARTING", "FATAL"]
    for fatal in (first, second):
        assert fatal.next_delay == 1.0
        assert "\n" not in fatal.detail
        assert "No module named 'deephaven_enterprise'" in fatal.detail
        assert f"{bare}/bin/pip install 'deephaven-coreplus-client>=" in fatal.detail
    assert second.time - first.time >= 0.9  # paced by fatal_retry, not a crash loop
    assert "Traceback" not in repr(logs)
    assert [e for e in logs if e["event"] in ("output", "resource_start_crashed")] == []


async def test_the_password_is_in_no_helper_argv_or_environment(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """Factory and session helpers get the password over their socket only: not even the
    variable it was read from is handed on to them."""
    assert os.environ["DH_ENTERPRISE_PASSWORD"] == PASSWORD  # set for the daemon
    async with supervised(launcher, factory_config, {"risk": {"pq_name": "Risk"}}) as (
        run,
        resources,
    ):
        await run.entered("risk", State.RUNNING)
        helpers = [resources[name].client for name in ("dh", "risk")]
        for helper in helpers:
            assert helper is not None
            for part in ("cmdline", "environ"):
                shown = await trio.Path(f"/proc/{helper.pid}/{part}").read_bytes()
                assert PASSWORD.encode() not in shown
                assert b"DH_ENTERPRISE_PASSWORD" not in shown
    assert len(system.requests("authenticate_by_password")) == 2  # and both logged in


# --------------------------------------------------------------------------- sessions


async def test_session_to_a_persistent_query_by_name(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """A session connects to its query by name, after its factory, and passes its checks."""
    async with supervised(launcher, factory_config, {"risk": {"pq_name": "Risk"}}) as (
        run,
        resources,
    ):
        await run.entered("risk", State.RUNNING)
        await run.until("risk", lambda s: s.checks >= 2)
        factory_ready = run.of("dh")[1]
        session_start = run.of("risk")[0]
        assert factory_ready.to_state == "RUNNING"
        assert factory_ready.seq < session_start.seq  # started only once the factory ran
        assert run["risk"].snapshot().ident == "pq:7"
        assert str(resources["risk"].identity) == "enterprise:prod:risk"
    assert [r["serial"] for r in system.requests("connect_session")] == [7]
    assert len(system.requests("authenticate_by_password")) == 2  # factory + session helper


async def test_unknown_query_is_misconfigured_and_a_stopped_one_offline(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """No query by that name: FATAL/MISCONFIGURED; a query that is not running: BACKOFF."""
    sessions = {"ghost": {"pq_name": "Nope"}, "idle": {"pq_name": "Stopped"}}
    async with supervised(launcher, factory_config, sessions) as (run, _):
        fatal = await run.entered("ghost", State.FATAL)
        assert fatal.detail.startswith("MISCONFIGURED: connect_pq: pq_name: no persistent query")
        assert run["ghost"].liveness is Liveness.MISCONFIGURED
        backoff = await run.entered("idle", State.BACKOFF)
        assert backoff.detail.startswith("OFFLINE: connect_pq: persistent query 'Stopped'")
        assert "not running (PQS_STOPPED)" in backoff.detail


async def test_session_creates_a_worker_and_deletes_it_on_stop(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """heap, jvm_args, auto_delete_timeout and the language reach the new worker's query."""
    worker = {
        "heap": "2.5g",
        "jvm_args": ["-Dfoo=bar"],
        "auto_delete_timeout": "5m",
        "programming_language": "groovy",
    }
    async with supervised(launcher, factory_config, {"calc": worker}) as (run, _):
        await run.entered("calc", State.RUNNING)
        await run.until("calc", lambda s: s.checks >= 2)
        ident = run["calc"].snapshot().ident
    [added] = system.requests("add_query")
    assert added["name"].startswith("supervisor-calc-")
    assert added["heap_size_gb"] == 2.5
    assert (added["jvm_args"], added["auto_delete_timeout"]) == (["-Dfoo=bar"], 300)
    assert added["language"] == "Groovy"
    assert [f"pq:{r['serial']}" for r in system.requests("delete_query")] == [ident]


async def test_session_waits_for_a_factory_that_cannot_log_in(
    launcher: LocalLauncher,
    system: FakeSystem,
    factory_config: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the factory is FATAL, its sessions wait instead of failing on their own."""
    monkeypatch.setenv("DH_ENTERPRISE_PASSWORD", "wrong")
    async with supervised(launcher, factory_config, {"risk": {"pq_name": "Risk"}}) as (run, _):
        await run.entered("dh", State.FATAL)
        with trio.fail_after(5):
            # The detail changes without a transition, so no event says when: poll it.
            while run["risk"].detail != "waiting for dh":  # noqa: ASYNC110
                await trio.sleep(0.01)
        assert run["risk"].state is State.STOPPED
        assert system.requests("connect_session") == []


async def test_lost_session_is_restarted_and_a_helper_crash_spares_the_factory(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """A session the worker forgot, or a crashed helper, restarts that session only."""
    async with supervised(launcher, factory_config, {"risk": {"pq_name": "Risk"}}) as (
        run,
        resources,
    ):
        await run.entered("risk", State.RUNNING)
        system.set(dropped=[7])
        backoff = await run.entered("risk", State.BACKOFF)
        assert backoff.reason == "liveness"
        assert "session no longer valid" in backoff.detail
        system.set(dropped=[])
        await run.entered("risk", State.RUNNING, count=2)

        client = resources["risk"].client
        assert client is not None
        with pytest.raises(Exception):  # noqa: B017, PT011 - the helper dies mid-call
            await client.call("debug", 5.0, what="abort")
        crash = await run.entered("risk", State.BACKOFF, count=2)
        assert crash.reason in ("signal", "exit_code")
        await run.entered("risk", State.RUNNING, count=3)
        assert states(run, "dh") == ["STARTING", "RUNNING"]


async def test_run_script_reaches_the_session(
    launcher: LocalLauncher, system: FakeSystem, factory_config: dict[str, Any]
) -> None:
    """run_script goes to the session's console through its helper."""
    async with supervised(launcher, factory_config, {"risk": {"pq_name": "Risk"}}) as (
        run,
        resources,
    ):
        await run.entered("risk", State.RUNNING)
        session = resources["risk"]
        assert isinstance(session, EnterpriseSessionResource)
        await session.run_script("x = 1", timeout=5)
    assert [r["script"] for r in system.requests("run_script")] == ["x = 1"]


def test_fake_is_not_importable_here() -> None:
    """The fake reaches the helpers only: the test process keeps its own environment."""
    assert str(FAKE) not in sys.path
    assert "deephaven_enterprise" not in sys.modules
    assert os.environ.get("PYTHONPATH", "").find(str(FAKE)) == -1
