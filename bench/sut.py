"""The systems under test: start the daemon, the floor or a peer, find its children, stop it."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bench import peers

FLOOR = Path(__file__).with_name("floor.py")
KINDS = ("daemon", "floor", *peers.PEERS)
MANAGERS = ("daemon", *peers.PEERS)  # the ones with a control plane (status, reload)
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
POLL = 0.002  # seconds between polls: fine enough for ms results, cheap on a 2-CPU box
T = TypeVar("T")


FLOOD_LINE = "x" * 1023  # `yes` prints it, newline included 1 KiB, as fast as it can


def daemon_toml(
    commands: list[list[str]], workdir: Path, restart_at_once: bool = False, flood: bool = False
) -> str:
    """A config with one process resource per command and their output discarded.

    The API stays on, as shipped, but on a private socket and a free port, so that a
    benchmark never collides with another daemon on the machine. log_level is "info"
    (the shipped default) because `daemon_ready` is an info event.
    `restart_at_once` makes every kill count as "the first failure after a stable run"
    (reset_after = 0), the case the daemon promises to restart without delay; otherwise
    repeated kills would climb the backoff ladder and measure the policy, not the daemon.
    `flood` adds a resource `flood` printing as fast as it can (`yes`), its output kept in
    rotated files under WORKDIR/logs, as shipped (16 MiB files here, to bound the disk).
    """
    lines = [
        "[daemon]",
        'log_format = "json"',
        'log_level = "info"',
        'shutdown_timeout = "30s"',
        f"control_socket = {json.dumps(str(workdir / 'control.sock'))}",
        f"state_dir = {json.dumps(str(workdir / 'state'))}",
        'http = "127.0.0.1:0"',
        f"log_dir = {json.dumps(str(workdir / 'logs'))}",
    ]
    for i, command in enumerate(commands):
        argv = "[" + ", ".join(json.dumps(a) for a in command) + "]"
        lines += [f"[resources.r{i}]", 'kind = "process"', f"command = {argv}"]
        lines += ["log_output = false", 'stop_timeout = "5s"']
        if restart_at_once:
            lines.append(
                'restart = { reset_after = "0s", intensity = { max_restarts = 1000, within = "1s" } }'
            )
    if flood:
        lines += ["[resources.flood]", 'kind = "process"', f'command = ["yes", "{FLOOD_LINE}"]']
        lines += ['log = { max_bytes = "16m", backups = 1 }', 'stop_timeout = "5s"']
    return "\n".join(lines) + "\n"


@dataclass
class Sut:
    """One running system under test; its stdout and stderr go to `log`."""

    kind: str
    popen: subprocess.Popen[bytes]
    log: Path
    started_at: float
    # Every child ever seen, with its start time: what stop() must find gone at the end.
    seen: dict[int, str | None] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def children(self) -> list[int]:
        """Direct children; any thread may have forked them (the daemon has used a
        dedicated one), and /proc lists a child under that thread, so read every task."""
        kids: list[int] = []
        with contextlib.suppress(FileNotFoundError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(FileNotFoundError):
                    text = Path(f"/proc/{self.pid}/task/{task}/children").read_text()
                    kids += [int(p) for p in text.split()]
        for pid in kids:
            if pid not in self.seen:
                self.seen[pid] = _identity(pid)
        return kids

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.kind} exited with {self.popen.returncode}:\n{tail}")

    def is_ready(self, n: int) -> bool:
        """Daemon: it logged `daemon_ready`. Floor and peers: all `n` children exist."""
        self.check_alive()
        if self.kind == "daemon":
            return "daemon_ready" in self.log.read_text(errors="replace")
        return len(self.children()) >= n

    def wait_ready(self, n: int, timeout: float = 120.0) -> float:
        """Seconds from launch until ready (a `POLL`-grained upper bound)."""
        wait_for(lambda: self.is_ready(n), timeout, f"{self.kind} ready with {n} children")
        return time.monotonic() - self.started_at


def wait_for(probe: Callable[[], T], timeout: float, what: str) -> T:
    """Poll `probe` until it returns something truthy; polling is fine in a benchmark."""
    deadline = time.monotonic() + timeout
    while True:
        if result := probe():
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL)


def config_path(kind: str, workdir: Path) -> Path:
    return workdir / ("daemon.toml" if kind == "daemon" else peers.config_name(kind))


def write_config(
    kind: str,
    commands: list[list[str]],
    workdir: Path,
    restart_at_once: bool = False,
    flood: bool = False,
) -> Path:
    """(Re)write the config of the daemon or a peer: one program per command."""
    path = config_path(kind, workdir)
    if kind == "daemon":
        text = daemon_toml(commands, workdir, restart_at_once, flood)
    else:
        text = peers.config_text(kind, commands, workdir, restart_at_once)
    path.write_text(text)
    return path


def start(kind: str, n: int, command: list[str], workdir: Path, **toml: bool) -> Sut:
    """Launch the daemon or a peer (n programs) or the floor (n copies) running `command`."""
    if kind == "floor":
        argv = [sys.executable, str(FLOOR), str(n), *command]
    else:
        config = write_config(kind, [command] * n, workdir, **toml)
        if kind == "daemon":
            # The full run measures the daemon from its own venv (peers.ensure_ours).
            python = os.environ.get("BENCH_DAEMON_PYTHON", sys.executable)
            argv = [python, "-m", "supervisor", "run", "-c", str(config)]
        else:
            argv = peers.daemon_argv(kind, config)
    log = workdir / f"{kind}.log"
    with log.open("wb") as out:
        started = time.monotonic()
        # A session of its own, so that stop() can kill whatever is left as one group.
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            preexec_fn=_term_with_bench,  # noqa: PLW1509 (the bench has one thread)
        )
    return Sut(kind, popen, log, started)


def _term_with_bench() -> None:
    """SIGTERM the system under test if the bench dies (e.g. a test's timeout kills it),
    so that it stops its children instead of living on as an orphan."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _identity(pid: int) -> str | None:
    """Start time (field 22 of /proc/PID/stat) of a process, or None once it has died.

    The start time tells a child from a later process that reused its pid; a zombie
    (already dead, waiting for init to reap it) counts as gone.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] in "ZX" else fields[19]


def stop(sut: Sut, timeout: float = 45.0) -> int:
    """SIGTERM, wait, then kill whatever outlived it (children lead their own sessions)."""
    sut.children()  # record the latest ones too
    if sut.popen.poll() is None:
        sut.popen.send_signal(signal.SIGTERM)
    try:
        code = sut.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sut.pid, signal.SIGKILL)
        code = sut.popen.wait()

    def survivors() -> list[int]:
        return [pid for pid, ident in sut.seen.items() if ident and _identity(pid) == ident]

    # A supervisor that kills its children on the way out may exit a moment before the
    # kernel has finished them: give them a second before calling them leaked.
    with contextlib.suppress(TimeoutError):
        wait_for(lambda: not survivors(), 1.0, "children to exit")
    leaked = survivors()
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The group for workload children (they lead one), the pid for helpers.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)
    if leaked:
        print(f"warning: {sut.kind} left {len(leaked)} children behind; killed them")
    return code


@contextlib.contextmanager
def running(kind: str, n: int, command: list[str], workdir: Path, **toml: bool) -> Iterator[Sut]:
    """`start()` ... `stop()`, stopping even when the benchmark fails half-way."""
    sut = start(kind, n, command, workdir, **toml)
    try:
        yield sut
    finally:
        code = stop(sut)
        if code != 0:
            tail = sut.log.read_text(errors="replace")[-2000:]
            print(f"warning: {kind} exited with {code} after SIGTERM; its log ends:\n{tail}")
