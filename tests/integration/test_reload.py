"""Live reload: apply what changed, touch nothing else, and never die of a bad file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from supervisor.api.client import Client
from supervisor.config.load import load_file
from supervisor.errors import ConfigError, DaemonUnavailableError, RequestError
from supervisor.runtime.daemon import Daemon
from supervisor.supervision.states import State
from tests.integration.conftest import process_gone, run_cli


def config_text(tmp_path: Path, names: list[str], *, changed: dict[str, str] | None = None) -> str:
    changed = changed or {}
    lines = [
        f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
    ]
    for name in names:
        lines.append(
            f'[resources.{name}]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
            f'health = {{ exec = ["true"], interval = "10s" }}\nstop_timeout = "2s"\n'
            + changed.get(name, "")
        )
    return "\n".join(lines)


@asynccontextmanager
async def daemon_from_file(path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_file(path), config_path=path, registry=CollectorRegistry())
    async with trio.open_nursery() as nursery:
        await nursery.start(daemon.run)
        yield daemon
        daemon.request_stop()


def pids(daemon: Daemon) -> dict[str, int | None]:
    return {name: sup.snapshot().pid for name, sup in daemon.supervisors.items()}


async def test_reload_touches_only_what_changed(tmp_path: Path) -> None:
    """50 resources: one new command, one new health interval, one removed, one added."""
    names = [f"r{i:02}" for i in range(50)]
    path = tmp_path / "supervisor.toml"
    path.write_text(config_text(tmp_path, names))
    async with daemon_from_file(path) as daemon:
        before = pids(daemon)
        mark = daemon.bus.last_seq
        new_names = [n for n in names if n != "r49"] + ["added"]
        path.write_text(
            config_text(
                tmp_path,
                new_names,
                changed={
                    "r00": 'env = { CHANGED = "1" }\n',
                    "r01": 'restart = { backoff = { max = "1m" } }\n',
                },
            ).replace(
                'command = ["sleep", "1000"]\nhealth = { exec = ["true"], interval = "10s" }\nstop_timeout = "2s"\nrestart',
                'command = ["sleep", "1000"]\nhealth = { exec = ["true"], interval = "3s" }\nstop_timeout = "2s"\nrestart',
            )
        )
        plan = await daemon.reload(dry_run=False)
        assert plan["restarted"] == ["r00"]
        assert plan["updated"] == ["r01"]
        assert plan["removed"] == ["r49"]
        assert plan["added"] == ["added"]
        assert len(plan["unchanged"]) == 47
        with trio.fail_after(10):
            await daemon.supervisors["r00"].wait_for(
                lambda s: s.state is State.RUNNING and s.restarts == 1
            )
            await daemon.supervisors["added"].wait_for(lambda s: s.state is State.RUNNING)
        after = pids(daemon)
        untouched = [n for n in names if n not in ("r00", "r49")]
        assert {n: after[n] for n in untouched} == {n: before[n] for n in untouched}
        assert after["r00"] != before["r00"]
        assert "r49" not in daemon.supervisors
        old_r49 = before["r49"]
        assert old_r49 is not None
        await process_gone(old_r49)
        touched = {e.name for e in daemon.bus.replay(mark)[0]}
        assert touched == {"r00", "r49", "added"}
        restarts = [e for e in daemon.bus.replay(mark)[0] if e.restart]
        assert [(e.name, e.reason) for e in restarts] == [("r00", "reload")]
        r01 = daemon.supervisors["r01"]
        assert r01.settings.restart.backoff.max == 60.0
        assert r01.resource.check_settings is not None
        assert r01.resource.check_settings.interval == 3.0


async def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run reports the plan and applies none of it."""
    path = tmp_path / "supervisor.toml"
    path.write_text(config_text(tmp_path, ["a", "b"]))
    async with daemon_from_file(path) as daemon:
        before = pids(daemon)
        path.write_text(config_text(tmp_path, ["a", "c"], changed={"a": 'cwd = "/"\n'}))
        plan = await daemon.reload(dry_run=True)
        assert (plan["dry_run"], plan["restarted"], plan["removed"], plan["added"]) == (
            True,
            ["a"],
            ["b"],
            ["c"],
        )
        assert pids(daemon) == before


async def test_an_invalid_file_keeps_the_old_config(tmp_path: Path) -> None:
    """A broken file is refused with every problem; nothing running is touched."""
    path = tmp_path / "supervisor.toml"
    path.write_text(config_text(tmp_path, ["a"]))
    async with daemon_from_file(path) as daemon:
        before = pids(daemon)
        path.write_text(
            config_text(tmp_path, ["a"], changed={"a": "start_timeout = 'soon'\nbogus = 1\n"})
        )
        with pytest.raises(ConfigError) as info:
            await daemon.reload(dry_run=False)
        assert {p.path for p in info.value.problems} == {
            "resources.a.start_timeout",
            "resources.a.bogus",
        }
        assert pids(daemon) == before
        assert daemon.supervisors["a"].state is State.RUNNING
        text = (await daemon.control.render_metrics()).decode()
        assert 'supervisor_config_reloads_total{result="failure"} 1.0' in text


async def test_a_fatal_resource_whose_config_changed_is_retried_at_once(tmp_path: Path) -> None:
    """Fixing the config of a FATAL resource starts it now, not after fatal_retry."""
    path = tmp_path / "supervisor.toml"
    broken = (
        f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\n'
        '[resources.x]\nkind = "process"\ncommand = ["sh", "-c", "exit 1"]\n'
        'restart = { intensity = { max_restarts = 1, within = "1m" }, fatal_retry = "1h", backoff = { initial = "10ms" } }\n'
    )
    path.write_text(broken)
    async with daemon_from_file(path) as daemon:
        sup = daemon.supervisors["x"]
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.FATAL)
        path.write_text(broken.replace('["sh", "-c", "exit 1"]', '["sleep", "1000"]'))
        plan = await daemon.reload(dry_run=False)
        assert plan["restarted"] == ["x"]
        with trio.fail_after(10):
            await sup.wait_for(lambda s: s.state is State.RUNNING)


# -- the daemon as a process: signals, the API, the CLI, and garbage --------------------


@pytest.fixture(scope="module")
def running_daemon(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[subprocess.Popen[bytes], Path, Path]]:
    tmp = tmp_path_factory.mktemp("reload")
    path = tmp / "supervisor.toml"
    path.write_text(
        config_text(tmp, ["a", "b"]).replace("[daemon]\n", '[daemon]\nlog_format = "json"\n')
    )
    log = (tmp / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(path)], stdout=log, stderr=log
    )
    sock = tmp / "control.sock"
    for _ in range(400):  # bounded wait for readiness, asked of the API itself
        try:
            with Client.connect(socket_path=sock) as client:
                if client.ready():
                    break
        except (DaemonUnavailableError, RequestError):
            pass  # not listening yet
        time.sleep(0.05)
    else:
        raise AssertionError("the daemon did not become ready")
    yield proc, path, sock
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    log.close()


def test_a_burst_of_sighups_leaves_the_daemon_healthy(
    running_daemon: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    """100 SIGHUPs: coalesced, nothing restarted, the API still answers."""
    proc, _, sock = running_daemon
    with Client.connect(socket_path=sock) as client:
        before = {r["name"]: r["pid"] for r in client.resources()}
        for _ in range(100):
            os.kill(proc.pid, signal.SIGHUP)
        assert client.health() == {"status": "ok"}
        assert client.ready()

        def successes() -> int:
            return next(
                (
                    int(float(line.split()[-1]))
                    for line in client.metrics().splitlines()
                    if line.startswith('supervisor_config_reloads_total{result="success"}')
                ),
                0,  # no reload yet: the labelled series does not exist
            )

        deadline = time.monotonic() + 60
        while successes() == 0:  # the metric is the event: the first reload has applied
            assert time.monotonic() < deadline, "no reload applied within 60 s"
            time.sleep(0.05)
        client.reload(dry_run=True)  # waits its turn behind a pending reload, if any
        reloads = successes()
        assert 1 <= reloads < 100  # coalesced
        assert {r["name"]: r["pid"] for r in client.resources()} == before
        assert all(r["restarts"] == 0 for r in client.resources())


def test_cli_reload_reports_the_plan_and_refuses_bad_files(
    running_daemon: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    """`supervisor reload` prints the plan; a broken file exits 1 listing the problems."""
    _, path, sock = running_daemon
    good = path.read_text()
    dry = run_cli("reload", "--dry-run", "--socket", str(sock))
    assert dry.returncode == 0, dry.stderr
    assert '"dry_run": true' in dry.stdout
    try:
        path.write_text(good + "\n[resources.c]\nkind = 'process'\n")
        bad = run_cli("reload", "--socket", str(sock))
        assert bad.returncode == 1
        assert "keeps running on its old config" in bad.stderr
        assert "resources.c.command: required key is missing" in bad.stderr
    finally:
        path.write_text(good)


def test_applying_a_shown_plan_is_refused_with_409_once_the_file_changed(
    running_daemon: tuple[subprocess.Popen[bytes], Path, Path],
) -> None:
    """A plan's hash sent back applies that plan; an edit of the file between the dry run
    and the apply gets 409 plan_changed and changes nothing."""
    _, path, sock = running_daemon
    good = path.read_text()
    with Client.connect(socket_path=sock) as client:
        before = {r["name"]: r["pid"] for r in client.resources()}
        path.write_text(good + "\n[resources.c]\nkind = 'process'\ncommand = ['sleep', '1000']\n")
        shown = client.reload(dry_run=True)
        assert shown["added"] == ["c"]
        assert shown["hash"].startswith("sha256:")
        assert client.reload(dry_run=True)["hash"] == shown["hash"]  # same file, same plan
        path.write_text(good + "\n[resources.d]\nkind = 'process'\ncommand = ['sleep', '1000']\n")
        with pytest.raises(RequestError) as refused:
            client.reload(plan=shown["hash"])
        assert (refused.value.status, refused.value.code) == (409, "plan_changed")
        assert {r["name"]: r["pid"] for r in client.resources()} == before
        again = client.reload(dry_run=True)
        applied = client.reload(plan=again["hash"])
        assert (applied["dry_run"], applied["added"]) == (False, ["d"])
        assert applied["hash"] == again["hash"]
        assert "d" in {r["name"] for r in client.resources()}


garbage = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                "[resources.a]",
                "[resources.b]",
                "kind = 'process'",
                "command = ['sleep', '1000']",
                "command = 'x'",
                "stop_timeout = 'soon'",
                "[daemon]",
                "http = 'x'",
                "depends_on = ['b']",
                "depends_on = ['a']",
                "restart = { policy = 'never' }",
                "[environments.e]",
                "min_ready = 9",
                "health = {}",
                "= = =",
                "[[x]]",
                "kind = 'container'",
                "[resources.'a b']",
            ]
        ),
        max_size=12,
    ).map("\n".join),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=garbage)
def test_garbage_never_stops_the_daemon(
    running_daemon: tuple[subprocess.Popen[bytes], Path, Path], text: str
) -> None:
    """Whatever the file holds, a reload either applies or is refused; the daemon lives."""
    proc, path, sock = running_daemon
    good = path.read_text()
    try:
        path.write_text(text)
        with Client.connect(socket_path=sock) as client:
            refused: RequestError | None = None
            try:
                client.reload(dry_run=True)
            except RequestError as exc:
                refused = exc
            if refused is not None:
                assert (refused.status, refused.code) == (422, "invalid_config")
            assert client.health() == {"status": "ok"}
    finally:
        path.write_text(good)
    assert proc.poll() is None
