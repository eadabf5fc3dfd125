"""Idle cost: CPU and memory of a supervisor whose N children just sleep.

Once everything is up, a supervisor has nothing to do but wait for deaths, so anything it
burns here (timers, polling, busy threads) is pure overhead that scales with N.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from bench import sut

COMMAND = ["sleep", "100000"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of `pid` (fields 14 and 15 of /proc/PID/stat)."""
    # Split after the last ")": the command name may itself contain spaces or parens.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    """Resident set size in MiB, from VmRSS (reported in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def helpers(s: sut.Sut) -> list[int]:
    """Children that are not the workload (e.g. the daemon's guardian process).

    They are part of the supervisor's cost, so they are counted with it: a supervisor
    must not look cheap by moving its work into a helper.
    """
    found = []
    for pid in s.children():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except FileNotFoundError:
            continue
        if [a.decode() for a in argv] != COMMAND:
            found.append(pid)
    return found


def measure(kind: str, n: int, workdir: Path, window: float, settle: float) -> dict[str, Any]:
    """Start `kind` with `n` sleepers, wait until ready, then watch it idle for `window` s."""
    with sut.running(kind, n, COMMAND, workdir) as s:
        ready_s = s.wait_ready(n)
        # Ready means every start was attempted; let the last transitions and log lines
        # drain so the window sees the steady state, not the tail of the start-up.
        time.sleep(settle)
        pids = [s.pid, *helpers(s)]
        children = len(s.children())
        before = sum(cpu_seconds(pid) for pid in pids)
        t0 = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - t0
        cpu = sum(cpu_seconds(pid) for pid in pids) - before
        s.check_alive()
        return {
            "n": n,
            "ready_s": ready_s,
            "window_s": elapsed,
            "cpu_s": cpu,
            "cpu_pct": 100 * cpu / elapsed,
            # Summed over processes, so pages they share count twice: an upper bound.
            "rss_mb": sum(rss_mb(pid) for pid in pids),
            "supervisor_rss_mb": rss_mb(s.pid),
            "helpers": len(pids) - 1,
            "children_at_start": children,
            "children_at_end": len(s.children()),
        }


def run(workdir: Path, sizes: list[int], window: float, settle: float) -> dict[str, Any]:
    """For each N, the daemon then the floor, each in a fresh process."""
    results: dict[str, Any] = {"window_s": window, "tick_s": 1 / TICK}
    for n in sizes:
        results[str(n)] = {}
        for kind in sut.KINDS:
            sub = workdir / f"{kind}-{n}"
            sub.mkdir()
            results[str(n)][kind] = measure(kind, n, sub, window, settle)
    return results
