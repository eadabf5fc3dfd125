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

from supervisor.launchers.deephaven.server import generate_psk
from tests.integration.conftest import run_cli
from tests.integration.test_daemon import daemon

pytestmark = pytest.mark.slow


async def test_no_secret_appears_in_logs_status_events_metrics_or_errors(tmp_path: Path) -> None:
    """API token, a launched server's PSK and a wrong client token: each appears only in
    the credentials answer, never in logs, the server's kept output (its files and the
    logs route), status, events, metrics or error messages."""
    api_token = "api-" + generate_psk()
    psk = generate_psk()
    wrong = "wrong-" + generate_psk()
    (tmp_path / "token").write_text(api_token + "\n")
    config = f"""[daemon]
log_format = "json"
api_token_file = "{tmp_path}/token"
log_dir = "{tmp_path}/logs"

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
            kept = ""
            for stream in ("stdout", "stderr"):
                answer = await api.get(
                    "/v1/resources/dh/logs", params={"stream": stream, "lines": 100_000}
                )
                assert answer.status_code == 200, answer.text
                kept += answer.text
            assert "Server started on port" in kept  # the server's output is kept and shown
            seen.append(kept)
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
    files = sorted((tmp_path / "logs").glob("dh.std*.log*"))
    assert files, "the server's output files are missing"
    seen.extend(f.read_text(errors="replace") for f in files)
    # Kept in its files, not relayed into the daemon's log (`log_output` is off).
    assert not [e for e in d.lines if e.get("event") == "output" and e.get("resource") == "dh"]
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


def descendants_of(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").iterdir():
            try:
                children = (task / "children").read_text().split()
            except FileNotFoundError:
                continue
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
    return found


def process_text(pid: int) -> str:
    """What anyone with /proc access sees of a process: its argv and initial environment."""
    try:
        return "\n".join(
            Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            for name in ("cmdline", "environ")
        )
    except (FileNotFoundError, ProcessLookupError):
        return ""


async def test_secret_fields_are_never_echoed_or_inherited(tmp_path: Path) -> None:
    """Distinctive secrets planted in every secret field, valid and wrong-typed: none shows
    in `check`, a refused reload (its 422 and the log), status, events, metrics, a failed
    login, or any child's argv or environment."""
    from_env = "env-" + generate_psk()  # the value of a token_env variable
    in_file = "file-" + generate_psk()  # a token_file's content
    typed = "typed-" + generate_psk()  # inside wrong-typed secret values
    wrong = "wrong-" + generate_psk()  # a wrong API token
    api_token = "api-" + generate_psk()
    (tmp_path / "token").write_text(api_token + "\n")
    (tmp_path / "dh-token").write_text(in_file + "\n")
    good = f"""[daemon]
log_format = "json"
api_token_file = "{tmp_path}/token"
[resources.remote]
kind = "deephaven"
port = 1
auth = "psk"
token_env = "PLANTED_DH_TOKEN"
restart = {{ backoff = {{ initial = "200ms", max = "1s" }} }}
[resources.remote2]
kind = "deephaven"
port = 1
auth = "psk"
token_file = "{tmp_path}/dh-token"
restart = {{ backoff = {{ initial = "200ms", max = "1s" }} }}
[resources.child]
kind = "process"
command = ["sleep", "1000"]
[environments.box]
min_ready = 1
max_size = 2
"""
    bad = (
        good
        + f'[resources.typed]\nkind = "deephaven"\nport = 1\nauth = "psk"\ntoken = ["{typed}"]\n'
        + f'[resources.typed2]\nkind = "process"\ncommand = ["x"]\nenv = {{ K = ["{typed}"] }}\n'
    )
    seen: list[str] = []
    (tmp_path / "bad.toml").write_text(bad)
    checked = await trio.to_thread.run_sync(
        lambda: run_cli("check", "-c", str(tmp_path / "bad.toml"))
    )
    assert checked.returncode == 1
    seen.append(checked.stdout + checked.stderr)
    env = {**os.environ, "PLANTED_DH_TOKEN": from_env}
    async with daemon(tmp_path, good, env=env) as d:
        await d.until_log("daemon_ready")
        sock = str(tmp_path / "control.sock")
        transport = httpx.AsyncHTTPTransport(uds=sock)
        async with httpx.AsyncClient(transport=transport, base_url="http://d", timeout=30) as api:
            session = (await api.post("/v1/environments/box/sessions", json={})).json()
            ran = await api.post(
                f"/v1/sessions/{session['session_id']}/exec", json={"command": ["env"]}
            )
            seen.append(ran.text)
            children = "\n".join(process_text(pid) for pid in descendants_of(d.proc.pid))
            assert "sleep 1000" in children  # the scan reached the children
            seen.append(children)
            await api.delete(f"/v1/sessions/{session['session_id']}")
            config = tmp_path / "supervisor.toml"
            config.write_text(bad.replace("[daemon]\n", d_private(tmp_path), 1))
            refused = await api.post("/v1/reload")
            assert refused.status_code == 422
            seen.append(refused.text)
            for path in ("/v1/resources", "/v1/resources/remote", "/metrics", "/v1/environments"):
                seen.append((await api.get(path)).text)
        http = next(e for e in d.lines if e.get("event") == "api_listening")["http"]
        async with httpx.AsyncClient(base_url=f"http://{http}", timeout=10) as tcp:
            seen.append(
                (await tcp.get("/v1/resources", headers={"authorization": f"Bearer {wrong}"})).text
            )
        seen.append(await trio.to_thread.run_sync(run_cli_events, sock))
        await d.until_log("config_reload_failed")
        d.proc.send_signal(signal.SIGTERM)
        with trio.fail_after(60):
            assert await d.proc.wait() == 0
        await d.until_log("daemon_stopped")
        seen.append("\n".join(json.dumps(line) for line in d.lines))
    everything = "\n".join(seen)
    for secret in (from_env, in_file, typed, wrong, api_token):
        assert secret not in everything, secret[:8]
        assert secret[:16] not in everything


def d_private(tmp_path: Path) -> str:
    return (
        f'[daemon]\ncontrol_socket = "{tmp_path}/control.sock"\nhttp = "127.0.0.1:0"\n'
        f'state_dir = "{tmp_path}/state"\n'
    )
