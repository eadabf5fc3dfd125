"""A whole run of the daemon, scanned for its secrets: none may leak into any output."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from supervisor.launchers.deephaven import generate_psk
from tests.integration.conftest import run_cli
from tests.integration.test_daemon import daemon

pytestmark = pytest.mark.slow


async def test_no_secret_appears_in_logs_status_events_metrics_or_errors(tmp_path: Path) -> None:
    """API token, a launched server's PSK and a wrong client token: each appears only in
    the credentials answer, never in logs, status, events, metrics or error messages."""
    api_token = "api-" + generate_psk()
    psk = generate_psk()
    wrong = "wrong-" + generate_psk()
    (tmp_path / "token").write_text(api_token + "\n")
    config = f"""[daemon]
log_format = "json"
api_token_file = "{tmp_path}/token"

[resources.dh]
kind = "deephaven"
launch = "python"
port = "auto"
heap = "512m"
auth = "psk"
token = "{psk}"
liveness = {{ interval = "1s", timeout = "5s", failures = 3 }}

[resources.intruder]
kind = "deephaven"
host = "127.0.0.1"
port = 1
auth = "psk"
token = "{wrong}"
restart = {{ backoff = {{ initial = "200ms", max = "1s" }} }}

[environments.box]
backend = "process"
min_ready = 1
max_size = 2
"""
    seen: list[str] = []
    async with daemon(tmp_path, config) as d:
        await d.until_log("daemon_ready", timeout=90)
        sock = str(tmp_path / "control.sock")
        transport = httpx.AsyncHTTPTransport(uds=sock)
        async with httpx.AsyncClient(transport=transport, base_url="http://d", timeout=30) as api:
            with trio.fail_after(90):
                while (await api.get("/v1/resources/dh")).json()["state"] != "RUNNING":  # noqa: ASYNC110 - another process's state
                    await trio.sleep(0.2)
            creds = (await api.get("/v1/resources/dh/credentials")).json()
            assert creds["token"] == psk  # the one place it may appear
            for path in ("/v1/resources", "/v1/resources/dh", "/v1/resources/intruder", "/metrics"):
                seen.append((await api.get(path)).text)
            session = (await api.post("/v1/environments/box/sessions", json={})).json()
            seen.append(json.dumps(session))
            answer = await api.post(
                f"/v1/sessions/{session['session_id']}/exec", json={"command": ["env"]}
            )
            seen.append(answer.text)
            seen.append((await api.delete(f"/v1/sessions/{session['session_id']}")).text)
            seen.append((await api.get("/v1/resources/intruder/credentials")).text)
        http = next(e for e in d.lines if e.get("event") == "api_listening")["http"]
        async with httpx.AsyncClient(base_url=f"http://{http}", timeout=10) as tcp:
            for header in ({}, {"authorization": f"Bearer {wrong}"}, {"authorization": wrong}):
                seen.append((await tcp.get("/v1/resources", headers=header)).text)
            authorized = {"authorization": f"Bearer {api_token}"}
            seen.append((await tcp.get("/v1/resources", headers=authorized)).text)
        env = {**os.environ, "SUPERVISOR_SOCKET": sock}
        status = await trio.to_thread.run_sync(lambda: run_cli("status", "--json", env=env))
        seen.append(status.stdout + status.stderr)
        seen.append(await trio.to_thread.run_sync(run_cli_events, sock))
        d.proc.send_signal(signal.SIGHUP)
        await d.until_log("config_reloaded")
        d.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await d.proc.wait() == 0
        await d.until_log("daemon_stopped")
        seen.append("\n".join(json.dumps(line) for line in d.lines))
    relayed = [e for e in d.lines if e.get("event") == "output" and e.get("resource") == "dh"]
    assert any("Server started on port" in e["line"] for e in relayed)  # output was relayed
    assert any(e.get("event") == "deephaven_server_started" for e in d.lines)
    everything = "\n".join(seen)
    assert len(everything) > 10_000  # a real run's worth of output was scanned
    for secret in (api_token, psk, wrong):
        assert secret not in everything
        assert secret[:16] not in everything  # nor a recognisable prefix of it


def run_cli_events(sock: str) -> str:
    """The event stream's replay, as the CLI prints it (bounded: it follows forever)."""
    proc = subprocess.run(
        ["timeout", "3", sys.executable, "-m", "supervisor", "events", "--since", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "SUPERVISOR_SOCKET": sock},
        check=False,
        timeout=30,
    )
    return proc.stdout + proc.stderr
