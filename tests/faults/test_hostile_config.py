"""Bad configs against a real daemon: `check`, start-up and reload refuse the same file with
the same messages, a refused reload keeps the old config, the largest allowed pool costs no
memory until it is used, and a clean run logs nothing at warning or above."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.integration.conftest import run_cli
from tests.integration.test_daemon import CONFIG, daemon

pytestmark = pytest.mark.slow

BAD = """
[daemon]
log_format = "json"
[resources.p]
kind = "process"
command = ["   "]
autostart = "yes"
start_timeout = 1e308
[environments.e]
max_size = 99999999999999999999999
"""
BAD_PROBLEMS = [
    "environments.e.max_size: must be between 0 and 10000 (got a number that large)",
    "resources.p.autostart: Input should be a valid boolean (got 'yes')",
    "resources.p.command: the program (the first element) must not be blank",
    "resources.p.start_timeout: must be more than 0s and at most 1d (got a number that large)",
]
POOL = """
[daemon]
log_format = "json"
[environments.box]
min_ready = 1
max_size = MAX
[[environments.box.features]]
kind = "command"
setup_session = ["sh", "-c", "find . -mindepth 1 -delete"]
"""


def client(tmp_path: Path) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(uds=str(tmp_path / "control.sock"))
    return httpx.AsyncClient(transport=transport, base_url="http://daemon", timeout=60)


def problems_in(text: str) -> list[str]:
    return sorted(line.strip() for line in text.splitlines() if line.startswith("  "))


async def test_check_start_and_reload_refuse_a_bad_file_alike(tmp_path: Path) -> None:
    """The same problems, word for word, from `check`, from `run`, and from a reload
    (which leaves the running config and its children untouched)."""
    bad = tmp_path / "bad.toml"
    bad.write_text(BAD)
    checked = run_cli("check", "-c", str(bad))
    assert checked.returncode == 1
    assert problems_in(checked.stderr) == BAD_PROBLEMS

    started = await trio.run_process(
        [sys.executable, "-m", "supervisor", "run", "-c", str(bad)],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    assert started.returncode == 1
    assert problems_in(started.stderr.decode()) == BAD_PROBLEMS

    async with daemon(tmp_path) as d, client(tmp_path) as api:
        await d.until_log("daemon_ready")
        before = {r["name"]: r["pid"] for r in (await api.get("/v1/resources")).json()["resources"]}
        (tmp_path / "supervisor.toml").write_text(
            BAD.replace("[daemon]\n", "[daemon]\n" + private(tmp_path))
        )
        answer = await api.post("/v1/reload")
        assert answer.status_code == 422
        body = answer.json()["error"]
        assert body["code"] == "invalid_config"
        assert sorted(f"{p['path']}: {p['message']}" for p in body["problems"]) == BAD_PROBLEMS
        after = {r["name"]: r["pid"] for r in (await api.get("/v1/resources")).json()["resources"]}
        assert after == before
        logged = await d.until_log("config_reload_failed")
        assert sorted(logged["problems"]) == BAD_PROBLEMS  # type: ignore[arg-type]


def private(tmp_path: Path) -> str:
    return (
        f'control_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path}/state"\n'
    )


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_reload_to_the_largest_pool_costs_no_memory_until_used(tmp_path: Path) -> None:
    """max_size 2 -> 10,000 (the bound) with one sandbox in use: the daemon's RSS moves by
    less than 10 MiB, and the pool still works."""
    async with daemon(tmp_path, POOL.replace("MAX", "2")) as d, client(tmp_path) as api:
        await d.until_log("daemon_ready")
        session = (await api.post("/v1/environments/box/sessions")).json()["session_id"]
        await api.delete(f"/v1/sessions/{session}")
        before = rss_kib(d.proc.pid)
        (tmp_path / "supervisor.toml").write_text(
            (tmp_path / "supervisor.toml").read_text().replace("max_size = 2", "max_size = 10000")
        )
        plan = (await api.post("/v1/reload")).json()
        assert plan["environments"]["resized"] == ["box"]
        stats = (await api.get("/v1/environments/box")).json()
        assert stats["max_size"] == 10000
        after = rss_kib(d.proc.pid)
        assert after - before < 10 * 1024, (before, after)
        answer = await api.post("/v1/environments/box/sessions")
        assert answer.status_code == 201


async def test_a_clean_start_exec_and_stop_log_nothing_at_warning_or_above(tmp_path: Path) -> None:
    """Resources and a pool come up, a session runs a command, SIGTERM stops it all: every
    log line is info or debug (no false alarms such as state_dir_unwritable)."""
    config = CONFIG + POOL.replace('[daemon]\nlog_format = "json"\n', "").replace("MAX", "2")
    async with daemon(tmp_path, config) as d, client(tmp_path) as api:
        await d.until_log("daemon_ready")
        session = (await api.post("/v1/environments/box/sessions")).json()["session_id"]
        ran = await api.post(f"/v1/sessions/{session}/exec", json={"command": ["echo", "hi"]})
        assert ran.json()["stdout"] == "hi\n"
        assert (await api.delete(f"/v1/sessions/{session}")).status_code == 204
        d.proc.terminate()
        await d.until_log("daemon_stopped")
        with trio.fail_after(20):
            assert await d.proc.wait() == 0
    loud = [line for line in d.lines if line.get("level") not in ("info", "debug")]
    assert loud == [], json.dumps(loud, indent=1)
