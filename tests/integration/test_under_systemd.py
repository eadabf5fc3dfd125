"""The daemon under a real systemd (PID 1 in a container): READY, reload, watchdog, stop,
and the sandbox boundaries with the shipped unit's hardening around them.

The container boots the image that tests/provision.sh builds (Debian minbase + systemd +
bubblewrap, no registry involved). This checkout and its virtualenv are mounted read-only
at the same paths, and the shipped unit and sysusers snippet are installed as a package
would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGE = "supervisor-test/systemd:bookworm"
UNIT = "supervisor-daemon"
CONFIG = """
[daemon]
http = "127.0.0.1:9310"
[resources.slow]
kind = "process"
command = ["sleep", "1000"]
startup = { exec = ["sleep", "1.5"], interval = "100ms" }   # READY waits for this
[resources.tree]
kind = "process"
command = ["sh", "-c", "sleep 1000 & wait"]
[environments.box]
min_ready = 1
max_size = 2
cgroup = { memory = "64m", processes = 64 }
"""


class Container:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(
        self, *argv: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "exec", "-i", self.name, *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    def write(self, path: str, text: str) -> None:
        self.run("sh", "-c", f"mkdir -p $(dirname {path}) && cat > {path}", stdin=text)

    def show(self, prop: str) -> str:
        return self.run("systemctl", "show", "-p", prop, "--value", UNIT).stdout.strip()

    def until(self, prop: str, predicate: object, timeout: float = 60.0) -> str:
        """Poll a unit property (bounded) until `predicate(value)` holds: systemd has no push here."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.show(prop)
            if predicate(value):  # type: ignore[operator]
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{prop}={value!r} after {timeout}s")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def systemd() -> Iterator[Container]:
    name = f"supervisor-systemd-{uuid.uuid4().hex[:8]}"
    python_home = Path(sys.base_prefix)
    subprocess.run(
        [
            "docker", "run", "-d", "--name", name,
            "--cap-add", "SYS_ADMIN", "--security-opt", "seccomp=unconfined",
            # Docker's masks over /proc would stop any fresh /proc (the sandboxes') here.
            "--security-opt", "systempaths=unconfined",
            "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--tmpfs", "/run", "--tmpfs", "/run/lock",
            "-v", f"{REPO}:{REPO}:ro", "-v", f"{python_home}:{python_home}:ro",
            IMAGE, "/sbin/init",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    box = Container(name)
    try:
        deadline = time.monotonic() + 60
        while box.run("systemctl", "is-system-running", check=False).stdout.strip() not in (
            "running",
            "degraded",
        ):
            assert time.monotonic() < deadline, "systemd did not boot in the container"
            time.sleep(0.2)
        # Install as a package would: the console script, the unit, the system user.
        box.run("chmod", "0755", "/root")  # the service user reads the interpreter under it
        box.run(
            "ln", "-sf", str(REPO / ".venv" / "bin" / "supervisor"), "/usr/local/bin/supervisor"
        )
        box.write(
            f"/etc/systemd/system/{UNIT}.service",
            (REPO / "systemd" / f"{UNIT}.service").read_text(),
        )
        box.write(
            f"/usr/lib/sysusers.d/{UNIT}.conf", (REPO / "systemd" / f"{UNIT}.sysusers").read_text()
        )
        box.run("systemd-sysusers")
        box.write("/etc/supervisor-daemon/supervisor.toml", CONFIG)
        # A short watchdog, so that the freeze test takes seconds, not half a minute; not
        # shorter, or a loaded machine's stall (pets come every 2.5 s) restarts the daemon
        # under the other tests, which count its restarts.
        dropin = "[Service]\nWatchdogSec=5s\nRestartSec=1s\n"
        if REPO.is_relative_to("/tmp") or REPO.is_relative_to("/var/tmp"):
            # The checkout (and its venv) would be hidden by the unit's PrivateTmp=yes.
            dropin += "PrivateTmp=no\n"
        box.write(f"/etc/systemd/system/{UNIT}.service.d/test.conf", dropin)
        box.run("systemctl", "daemon-reload")
        yield box
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def test_active_only_after_ready(systemd: Container) -> None:
    """`systemctl start` returns once READY=1 arrived: after the slow startup probe."""
    began = time.monotonic()
    started = systemd.run("systemctl", "start", UNIT, check=False)
    journal = systemd.run("journalctl", "-u", UNIT, "--no-pager", "-n", "30", check=False).stdout
    assert started.returncode == 0, journal
    assert time.monotonic() - began >= 1.5  # the startup probe of `slow` takes 1.5 s
    assert systemd.show("ActiveState") == "active"
    assert systemd.show("StatusText").startswith("2 running, 0 fatal")
    status = systemd.run("supervisor", "status").stdout
    assert "slow" in status
    assert "RUNNING" in status


def sandbox_sh(systemd: Container, session: str, script: str) -> subprocess.CompletedProcess[str]:
    argv = ["supervisor", "session", "exec", session, "--timeout", "20s", "--", "sh", "-c", script]
    return systemd.run(*argv, check=False)


def test_sandbox_boundaries_hold_under_the_unit(systemd: Container) -> None:
    """Under the shipped unit an isolated sandbox still cannot write the host, read its
    neighbour, see host processes or the network, fork without end or eat memory; each
    attempt fails and the sandbox, its neighbour and the daemon carry on."""
    assert systemd.show("ActiveState") == "active"
    restarts = systemd.show("NRestarts")
    first = systemd.run("supervisor", "session", "acquire", "box").stdout.strip()
    second = systemd.run("supervisor", "session", "acquire", "box").stdout.strip()
    try:
        wrote = sandbox_sh(systemd, first, "echo mine > note; touch /etc/evil; cat note")
        assert "Read-only file system" in wrote.stderr, wrote
        assert wrote.stdout == "mine\n"
        assert systemd.run("test", "-e", "/etc/evil", check=False).returncode != 0
        uid = int(sandbox_sh(systemd, first, "id -u").stdout)
        assert uid >= 1_800_000_000
        peek = sandbox_sh(systemd, second, "cat /var/tmp/supervisor-sandboxes/*/box/*/note")
        assert "mine" not in peek.stdout  # where the work dirs are, as the daemon sees them
        ps = sandbox_sh(systemd, first, "ls /proc | grep -cE '^[0-9]+$'")
        assert int(ps.stdout) < 10  # the agent, sh, ls, grep: no host process
        nets = sandbox_sh(systemd, first, "tail -n +3 /proc/net/dev | cut -d: -f1")
        assert nets.stdout.split() == ["lo"]
        bomb = sandbox_sh(systemd, first, "b() { b & b & wait; }; b")
        assert "Cannot fork" in bomb.stderr  # the sandbox's processes cap refused it
        hog = sandbox_sh(systemd, first, "x=$(head -c 200000000 /dev/zero | tr '\\0' a)")
        assert hog.returncode != 0
        assert sandbox_sh(systemd, first, "echo alive").stdout == "alive\n"
        assert sandbox_sh(systemd, second, "echo fine").stdout == "fine\n"
    finally:
        for session in (first, second):
            systemd.run("supervisor", "session", "release", session, check=False)
    assert systemd.show("ActiveState") == "active"
    assert systemd.show("NRestarts") == restarts
    # Replaced sandboxes leave no directory (the daemon can remove what their uids wrote).
    systemd.run("supervisor", "environment", "restart", "box")
    workdirs = "ls -d /var/tmp/systemd-private-*-supervisor-daemon.service-*/tmp/supervisor-sandboxes/*/box/*"
    deadline = time.monotonic() + 30
    while len(systemd.run("sh", "-c", workdirs, check=False).stdout.split()) != 1:
        assert time.monotonic() < deadline, systemd.run("sh", "-c", workdirs, check=False)
        time.sleep(0.2)  # the daemon's private /var/tmp: nothing to wait on from out here


def test_reload_applies_a_change(systemd: Container) -> None:
    """`systemctl reload` succeeds, adds the new resource and leaves the others alone."""
    before = systemd.run("supervisor", "status", "--json").stdout
    systemd.write(
        "/etc/supervisor-daemon/supervisor.toml",
        CONFIG + '[resources.added]\nkind = "process"\ncommand = ["sleep", "1000"]\n',
    )
    systemd.run("systemctl", "reload", UNIT)
    systemd.until("StatusText", lambda v: v.startswith("3 running, 0 fatal"))
    after = systemd.run("supervisor", "status", "--json").stdout
    assert '"added"' in after
    assert before.count('"restarts": 0') == 2
    assert after.count('"restarts": 0') == 3


JOURNALED = """
[resources.journaled]
kind = "process"
command = ["sh", "-c", "echo to-journal-out; echo to-journal-err >&2; exec sleep 1000"]
log = { target = "journald" }
"""


def test_journald_target_hands_a_childs_output_to_the_journal(systemd: Container) -> None:
    """With `log = { target = "journald" }` a child's stdout and stderr reach journald under
    its name (stdout at info, stderr at err) without the daemon, and `logs` says so."""
    added = '[resources.added]\nkind = "process"\ncommand = ["sleep", "1000"]\n'
    systemd.write("/etc/supervisor-daemon/supervisor.toml", CONFIG + added + JOURNALED)
    systemd.run("systemctl", "reload", UNIT)
    systemd.until("StatusText", lambda v: v.startswith("4 running, 0 fatal"))
    query = ["journalctl", "-t", "journaled", "--no-pager", "-o", "json"]
    deadline = time.monotonic() + 30
    while len(lines := systemd.run(*query).stdout.splitlines()) < 2:
        assert time.monotonic() < deadline, lines
        time.sleep(0.1)
    entries = {e["MESSAGE"]: e["PRIORITY"] for e in map(json.loads, lines)}
    assert entries == {"to-journal-out": "6", "to-journal-err": "3"}
    logs = systemd.run("supervisor", "logs", "journaled", check=False)
    assert logs.returncode == 1
    assert "journalctl -t journaled" in logs.stderr


def test_a_frozen_daemon_is_killed_by_the_watchdog_and_restarted(systemd: Container) -> None:
    """SIGSTOP the daemon: no more WATCHDOG=1, systemd kills and restarts it."""
    pid = systemd.show("MainPID")
    restarts = int(systemd.show("NRestarts"))
    systemd.run("kill", "-STOP", pid)
    systemd.until("NRestarts", lambda v: int(v) == restarts + 1)
    systemd.until("ActiveState", lambda v: v == "active")
    assert systemd.show("MainPID") != pid
    journal = systemd.run("journalctl", "-u", UNIT, "--no-pager").stdout
    assert "Watchdog timeout" in journal or "result 'watchdog'" in journal


def test_stop_is_clean_and_leaves_no_child(systemd: Container) -> None:
    """`systemctl stop` ends the daemon gracefully and nothing it started survives."""
    systemd.run("systemctl", "stop", UNIT)
    assert systemd.show("ActiveState") == "inactive"
    assert systemd.show("Result") == "success"
    assert systemd.run("pgrep", "-a", "sleep", check=False).stdout == ""
    assert systemd.run("pgrep", "-a", "bwrap", check=False).stdout == ""  # sandboxes too
    journal = systemd.run("journalctl", "-u", UNIT, "--no-pager", "-n", "20").stdout
    assert '"event": "daemon_stopped"' in journal


def test_an_invalid_config_is_refused_before_start(systemd: Container) -> None:
    """ExecStartPre=supervisor check: a broken file fails the start, with its key path logged."""
    systemd.write(
        "/etc/supervisor-daemon/supervisor.toml", CONFIG + "[resources.broken]\nkind = 'process'\n"
    )
    try:
        assert systemd.run("systemctl", "start", UNIT, check=False).returncode != 0
        assert systemd.show("Result") == "exit-code"
        assert systemd.show("SubState") in ("auto-restart", "failed")  # never came up
        journal = systemd.run("journalctl", "-u", UNIT, "--no-pager", "-n", "30").stdout
        assert "resources.broken.command: required key is missing" in journal
    finally:
        systemd.run("systemctl", "stop", UNIT, check=False)  # no more automatic retries
        systemd.write("/etc/supervisor-daemon/supervisor.toml", CONFIG)
        systemd.run("systemctl", "reset-failed", UNIT, check=False)
