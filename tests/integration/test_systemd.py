"""systemd's side of the daemon: the notify protocol on a real datagram socket, the unit."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from supervisor.runtime.systemd import Notifier, watchdog_interval

REPO = Path(__file__).resolve().parents[2]


class Listener:
    """A NOTIFY_SOCKET: receives the daemon's datagrams as dicts."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def until(self, key: str, value: str | None = None, timeout: float = 20.0) -> dict[str, str]:
        """Receive (bounded) until a message with `key` (= `value`) arrives; return it."""
        for message in self.messages:
            if key in message and (value is None or message[key] == value):
                self.messages.remove(message)
                return message
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            data = self.sock.recv(4096).decode()
            message = dict(line.split("=", 1) for line in data.splitlines())
            if key in message and (value is None or message[key] == value):
                return message
            self.messages.append(message)
        raise AssertionError(f"no {key}={value} within {timeout}s; got {self.messages}")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    listener = Listener(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


def start_daemon(tmp_path: Path, config: str, **env: str) -> subprocess.Popen[bytes]:
    path = tmp_path / "supervisor.toml"
    path.write_text(
        f'[daemon]\ncontrol_socket = "{tmp_path}/c.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp_path}/state"\nlog_format = "json"\n'
        + config
    )
    environ = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), **env}
    with (tmp_path / "daemon.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "-c", str(path)],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


RESOURCES = '[resources.a]\nkind = "process"\ncommand = ["sleep", "1000"]\n'


def test_notify_sequence_for_start_reload_failed_reload_and_stop(
    tmp_path: Path, listener: Listener
) -> None:
    """READY with a STATUS, RELOADING then READY per reload (failed ones say so), STOPPING."""
    proc = start_daemon(tmp_path, RESOURCES)
    try:
        ready = listener.until("READY", "1")
        assert ready["STATUS"] == "1 running, 0 fatal"
        (tmp_path / "supervisor.toml").write_text(
            (tmp_path / "supervisor.toml").read_text() + RESOURCES.replace(".a]", ".b]")
        )
        proc.send_signal(signal.SIGHUP)
        reloading = listener.until("RELOADING", "1")
        assert int(reloading["MONOTONIC_USEC"]) > 0
        after = listener.until("READY", "1")
        assert after["STATUS"] == "2 running, 0 fatal"  # b made its first start attempt
        (tmp_path / "supervisor.toml").write_text("[resources.broken]\n")
        proc.send_signal(signal.SIGHUP)
        listener.until("RELOADING", "1")
        failed = listener.until("READY", "1")
        assert "reload failed (1 problem(s)), running on the previous config" in failed["STATUS"]
        proc.send_signal(signal.SIGTERM)
        assert listener.until("STOPPING", "1")["STATUS"] == "stopping"
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_watchdog_is_petted_at_half_the_interval(tmp_path: Path, listener: Listener) -> None:
    """WATCHDOG=1 arrives about every WATCHDOG_USEC / 2 while the daemon is healthy."""
    proc = start_daemon(tmp_path, RESOURCES, WATCHDOG_USEC="400000")
    try:
        listener.until("READY", "1")
        stamps = []
        for _ in range(6):
            listener.until("WATCHDOG", "1")
            stamps.append(time.monotonic())
        gaps = sorted(b - a for a, b in itertools.pairwise(stamps))
        # 0.2 s nominal; the median, with generous bounds, because the machine is shared.
        assert 0.1 < gaps[len(gaps) // 2] < 0.5, gaps
        proc.send_signal(signal.SIGSTOP)  # a frozen daemon pets nothing
        listener.sock.settimeout(0.6)
        while True:  # drain what was sent before the freeze
            try:
                listener.sock.recv(4096)
            except TimeoutError:
                break
        proc.send_signal(signal.SIGCONT)
        listener.until("WATCHDOG", "1")  # and petting resumes when it thaws
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()


def test_watchdog_settings_come_from_the_environment() -> None:
    """Half of WATCHDOG_USEC, only for us (WATCHDOG_PID), nothing when unset."""
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "7"}, pid=7) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "8"}, pid=7) is None
    assert watchdog_interval({}, pid=7) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}, pid=7) is None


async def test_abstract_socket_addresses_work() -> None:
    """NOTIFY_SOCKET=@name is the abstract namespace."""
    name = f"supervisor-test-{os.getpid()}"
    receiver = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    await receiver.bind("\0" + name)
    notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
    await notifier.send(READY=1, STATUS="hello")
    with trio.fail_after(5):
        assert await receiver.recv(4096) == b"READY=1\nSTATUS=hello"
    notifier.close()
    receiver.close()


async def test_no_notify_socket_is_a_no_op() -> None:
    """Outside systemd, notifying does nothing and raises nothing."""
    notifier = Notifier({})
    assert not notifier.enabled
    await notifier.send(READY=1)


def shipped_unit(tmp_path: Path) -> Path:
    """The shipped unit, pointing at this checkout's console script (verify checks it exists)."""
    text = (REPO / "systemd" / "supervisor-daemon.service").read_text()
    unit = tmp_path / "supervisor-daemon.service"
    unit.write_text(
        text.replace("/usr/local/bin/supervisor", str(Path(sys.executable).with_name("supervisor")))
    )
    return unit


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """`systemd-analyze verify` has nothing at all to say about the unit."""
    result = subprocess.run(
        ["systemd-analyze", "verify", str(shipped_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_the_unit_is_hardened(tmp_path: Path) -> None:
    """The offline security score stays where it was put (lower is better): 2.1 as an
    unprivileged user; 4.2 since isolated sandboxes made it root with five capabilities,
    namespaces, mounts and its own cgroups (the unit says why for each)."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(shipped_unit(tmp_path))],
        capture_output=True,
        text=True,
        check=False,
    )
    line = result.stdout.strip().splitlines()[-1]
    score = float(line.split("supervisor-daemon.service:")[1].split()[0])
    assert score <= 4.5, line


def test_sysusers_and_tmpfiles_snippets_apply(tmp_path: Path) -> None:
    """The sysusers.d and tmpfiles.d snippets create the user and the directories."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group"):
        (root / "etc" / name).write_text(Path(f"/etc/{name}").read_text())
    snippets = REPO / "systemd"
    subprocess.run(
        ["systemd-sysusers", f"--root={root}", str(snippets / "supervisor-daemon.sysusers")],
        check=True,
        capture_output=True,
    )
    assert "supervisor-daemon:" in (root / "etc" / "passwd").read_text()
    group = next(
        line
        for line in (root / "etc" / "group").read_text().splitlines()
        if line.startswith("docker:")
    )
    assert "supervisor-daemon" in group.split(":")[3].split(",")
    subprocess.run(
        [
            "systemd-tmpfiles",
            f"--root={root}",
            "--create",
            str(snippets / "supervisor-daemon.tmpfiles"),
        ],
        check=True,
    )
    assert (root / "run" / "supervisor-daemon").stat().st_mode & 0o777 == 0o750


def test_a_slow_shutdown_extends_the_stop_timeout(tmp_path: Path, listener: Listener) -> None:
    """While resources are still stopping, EXTEND_TIMEOUT_USEC keeps systemd waiting."""
    armed = tmp_path / "armed"
    stubborn = (
        '[resources.slow]\nkind = "process"\nstop_timeout = "6s"\n'
        'command = ["python3", "-c", "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); '
        f"pathlib.Path('{armed}').touch(); time.sleep(1000)\"]\n"
        f'startup = {{ exec = ["test", "-f", "{armed}"], interval = "20ms" }}\n'
    )
    proc = start_daemon(tmp_path, stubborn)
    try:
        listener.until("READY", "1")
        proc.send_signal(signal.SIGTERM)
        listener.until("STOPPING", "1")
        extend = listener.until("EXTEND_TIMEOUT_USEC", timeout=20)
        assert int(extend["EXTEND_TIMEOUT_USEC"]) == 10_000_000
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
