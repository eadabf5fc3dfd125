"""Files shipped for the ecosystem: alert rules, the Grafana dashboard, a real Prometheus."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import trio

from tests.integration.conftest import free_port
from tests.integration.test_api import running

CONFIG = Path(__file__).resolve().parents[2] / "config"

# The metric names of the external contract (DESIGN.md, "Metrics"), without the prefix.
CONTRACT = {
    "build_info",
    "resource_state",
    "resource_liveness",
    "resource_transitions_total",
    "resource_restarts_total",
    "resource_start_duration_seconds",
    "liveness_check_duration_seconds",
    "environment_status",
    "sandboxes",
    "sandbox_transitions_total",
    "sessions_active",
    "session_acquire_wait_seconds",
    "session_duration_seconds",
    "sessions_ended_total",
    "acquire_rejections_total",
    "feature_errors_total",
    "housekeeping_duration_seconds",
    "config_reloads_total",
    "config_last_reload_success_timestamp_seconds",
    "orphans_reaped_total",
    "event_loop_lag_seconds",
}


def metric_names(text: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bsupervisor_[a-z_]+", text):
        base = re.sub(r"_(bucket|sum|count)$", "", name.removeprefix("supervisor_"))
        names.add(base)
    return names


def test_alert_rules_pass_promtool() -> None:
    """promtool accepts the rules and its unit tests of them pass."""
    check = subprocess.run(
        ["promtool", "check", "rules", "alerts.yml"],
        cwd=CONFIG / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    test = subprocess.run(
        ["promtool", "test", "rules", "alerts.test.yml"],
        cwd=CONFIG / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert test.returncode == 0, test.stdout + test.stderr


def test_alert_rules_and_dashboard_use_only_contract_metrics() -> None:
    """Every supervisor_* name in the rules and the dashboard is a contract metric."""
    rules = metric_names((CONFIG / "prometheus" / "alerts.yml").read_text())
    dashboard = json.loads((CONFIG / "grafana" / "dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = rules | metric_names(exprs)
    assert used <= CONTRACT, used - CONTRACT
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


async def prometheus_query(client: httpx.AsyncClient, query: str) -> list[dict[str, object]]:
    response = await client.get("/api/v1/query", params={"query": query})
    response.raise_for_status()
    result: list[dict[str, object]] = response.json()["data"]["result"]
    return result


async def until_query(
    client: httpx.AsyncClient, query: str, timeout: float = 30.0
) -> list[dict[str, object]]:
    """Ask Prometheus until `query` returns something (bounded): scrapes are periodic."""
    with trio.fail_after(timeout):
        for _ in range(100_000):
            try:
                result = await prometheus_query(client, query)
            except httpx.HTTPError:
                result = []
            if result:
                return result
            await trio.sleep(0.25)
    raise AssertionError("unreachable")


async def test_a_real_prometheus_scrapes_the_daemon(tmp_path: Path) -> None:
    """Prometheus sees the target up and ingests the state-set and the restart counter."""
    async with running(tmp_path) as daemon:
        assert daemon.api is not None
        assert daemon.api.http_address is not None
        host, port = daemon.api.http_address
        prom_port = free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: supervisor-daemon\n"
            f"    static_configs:\n      - targets: ['{host}:{port}']\n"
        )
        prometheus = await trio.lowlevel.open_process(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{prom_port}", timeout=5
            ) as client:
                up = await until_query(client, 'up{job="supervisor-daemon"} == 1')
                assert up[0]["value"][1] == "1"  # type: ignore[index]
                state = await until_query(
                    client, 'supervisor_resource_state{resource="sleeper", state="RUNNING"} == 1'
                )
                assert state
                pid = daemon.supervisors["sleeper"].snapshot().pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
                restarts = await until_query(
                    client,
                    'supervisor_resource_restarts_total{resource="sleeper", reason="signal"} >= 1',
                )
                assert restarts[0]["metric"]["kind"] == "process"  # type: ignore[index]
        finally:
            prometheus.terminate()
            with trio.fail_after(15):
                await prometheus.wait()
