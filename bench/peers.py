"""The peers: supervisord and circus, each in a private venv, configured like the daemon.

`ensure()` creates `.bench-venvs/<peer>` on demand (idempotent: a marker file records the
pins it was built with) and fails loudly if pip cannot install the pinned versions. The
config writers mirror `sut.daemon_toml`: one program/watcher per child, output discarded,
control endpoints private to the run's directory, restart at once on every death.
"""

from __future__ import annotations

import hashlib
import http.client
import shlex
import socket
import subprocess
import sys
import xmlrpc.client
from pathlib import Path
from typing import Any

VENVS = Path(__file__).resolve().parent.parent / ".bench-venvs"
PINS = {
    "supervisord": ["supervisor==4.3.0"],
    # circus 0.19.0 is the newest release and runs on Python 3.11; pyzmq, tornado and
    # psutil are its dependencies, pinned so that reruns compare like with like.
    "circus": ["circus==0.19.0", "pyzmq==27.3.0", "tornado==6.6.1", "psutil==7.2.2"],
}
PEERS = tuple(PINS)
# The peers restart a dead child on a periodic tick, not on SIGCHLD: supervisord's main
# loop polls with a 1 s timeout (Python retries the poll a signal interrupts), circusd
# checks its watchers every check_delay, which we set to 1 s (its ini default is 5 s). The
# latency benchmark kills at a random phase of the tick, not always just after a restart.
TICK_S = {"supervisord": 1.0, "circus": 1.0}

# circusd in the peer's venv: time `n` status calls with its own Python client.
CIRCUS_CLIENT = """
import json, sys, time
from circus.client import CircusClient
client = CircusClient(endpoint=sys.argv[1], timeout=30)
samples = []
for _ in range(int(sys.argv[2])):
    t = time.perf_counter()
    answer = client.call({"command": "status", "properties": {}})
    samples.append(time.perf_counter() - t)
    assert answer["status"] == "ok", answer
print(json.dumps(samples))
"""


def bin_dir(peer: str) -> Path:
    return VENVS / peer / "bin"


def ensure(peer: str) -> Path:
    """The peer's venv bin/ directory, created and pip-installed first if needed."""
    venv = VENVS / peer
    marker = venv / ".bench-pins"
    wanted = "\n".join(PINS[peer]) + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin"
    print(f"installing {peer} ({' '.join(PINS[peer])}) into {venv} ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *PINS[peer]],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot install the peer {peer!r}: {shlex.join(argv)} exited "
                f"{done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
    marker.write_text(wanted)
    return venv / "bin"


ROOT = Path(__file__).resolve().parent.parent


def ensure_ours() -> Path:
    """A venv with the daemon and its runtime dependencies only (an editable install of
    this tree, no test extras), so that it is measured as users run it, like the peers
    in theirs: the test venv also holds rich (via import-linter), which structlog then
    imports, and which a user's install does not have."""
    venv = VENVS / "ours"
    marker = venv / ".bench-pins"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest() + "\n"
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin" / "python"
    print(f"installing the daemon (no extras) into {venv} ...", file=sys.stderr)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-e", str(ROOT)],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot install the daemon: {shlex.join(argv)} exited "
                f"{done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
    marker.write_text(wanted)
    return venv / "bin" / "python"


def versions() -> dict[str, list[str]]:
    return {peer: PINS[peer] for peer in PEERS}


def supervisord_conf(commands: list[list[str]], workdir: Path, restart_at_once: bool) -> str:
    """supervisord: one [program] per child, autorestart, startsecs=0, output to NONE."""
    sock = workdir / "supervisor.sock"
    lines = [
        "[unix_http_server]",
        f"file={sock}",
        "[supervisord]",
        "nodaemon=true",
        f"logfile={workdir / 'supervisord.log'}",
        f"pidfile={workdir / 'supervisord.pid'}",
        f"childlogdir={workdir}",
        "loglevel=info",
        # Each child holds pipes in supervisord (stdin/stdout/stderr): raise the fd floor.
        f"minfds={max(1024, 4 * len(commands) + 256)}",
        f"minprocs={max(200, len(commands) + 100)}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "[supervisorctl]",
        f"serverurl=unix://{sock}",
    ]
    for i, command in enumerate(commands):
        lines += [f"[program:r{i}]", f"command={shlex.join(command)}", "autostart=true"]
        lines += ["autorestart=true", "startsecs=0", "stopwaitsecs=5"]
        lines += ["stdout_logfile=NONE", "stderr_logfile=NONE"]
        # Never give up on a program that dies: the latency benchmark kills it 50 times.
        lines.append(f"startretries={1_000_000 if restart_at_once else 3}")
    return "\n".join(lines) + "\n"


def circus_ini(commands: list[list[str]], workdir: Path, restart_at_once: bool) -> str:
    """circus: one [watcher] of one process per child, respawn, warmup_delay 0.

    circusd reaps and respawns only on its periodic check, every check_delay seconds: 1 s
    here (the Arbiter's own default) rather than the ini's 5 s, to match supervisord.
    """
    lines = [
        "[circus]",
        f"endpoint = ipc://{workdir / 'circus-ctl.sock'}",
        f"pubsub_endpoint = ipc://{workdir / 'circus-pub.sock'}",
        "statsd = False",
        f"check_delay = {TICK_S['circus']:g}",
        "loglevel = info",
    ]
    for i, command in enumerate(commands):
        lines += [f"[watcher:r{i}]", f"cmd = {shlex.join(command)}", "numprocesses = 1"]
        lines += ["respawn = True", "warmup_delay = 0", "graceful_timeout = 5"]
        lines += ["close_child_stdout = True", "close_child_stderr = True"]
        lines.append(f"max_retry = {-1 if restart_at_once else 5}")
    return "\n".join(lines) + "\n"


def config_name(peer: str) -> str:
    return {"supervisord": "supervisord.conf", "circus": "circus.ini"}[peer]


def config_text(peer: str, commands: list[list[str]], workdir: Path, restart: bool) -> str:
    writer = supervisord_conf if peer == "supervisord" else circus_ini
    return writer(commands, workdir, restart)


def daemon_argv(peer: str, config: Path) -> list[str]:
    """How to run the peer in the foreground."""
    if peer == "supervisord":
        return [str(bin_dir(peer) / "supervisord"), "-n", "-c", str(config)]
    return [str(bin_dir(peer) / "circusd"), str(config)]


def ctl(peer: str, workdir: Path, *args: str) -> list[str]:
    """The peer's control CLI (supervisorctl / circusctl) aimed at this run's daemon."""
    if peer == "supervisord":
        conf = str(workdir / config_name(peer))
        return [str(bin_dir(peer) / "supervisorctl"), "-c", conf, *args]
    endpoint = f"ipc://{workdir / 'circus-ctl.sock'}"
    return [str(bin_dir(peer) / "circusctl"), "--endpoint", endpoint, "--timeout", "60", *args]


def circus_client_argv(workdir: Path, calls: int) -> list[str]:
    endpoint = f"ipc://{workdir / 'circus-ctl.sock'}"
    return [str(bin_dir("circus") / "python"), "-c", CIRCUS_CLIENT, endpoint, str(calls)]


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=60)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


class _UnixTransport(xmlrpc.client.Transport):
    """xmlrpc.client over supervisord's unix socket; keeps the connection across calls."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = self._connection[1]
        if connection is None:
            connection = _UnixHTTPConnection(self._path)
            self._connection = (host, connection)
        return connection


def supervisord_rpc(workdir: Path) -> xmlrpc.client.ServerProxy:
    """An XML-RPC proxy to this run's supervisord (stdlib only, as supervisorctl does)."""
    transport = _UnixTransport(str(workdir / "supervisor.sock"))
    return xmlrpc.client.ServerProxy("http://localhost/RPC2", transport=transport)
