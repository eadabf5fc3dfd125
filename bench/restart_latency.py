"""Restart latency: SIGKILL the supervised child, time until its replacement starts.

Also the daemon's figure while a sibling floods its output (`yes`, its output kept in
rotated files): writing logs must not delay supervision, so it is reported as a ratio
to the quiet figure.

The child stamps CLOCK_MONOTONIC at its very first instruction into a file, so the
latency covers everything the supervisor does (notice the death, decide, fork, exec) and
nothing the benchmark does (polling only finds the stamp; it does not time it). Python's
time.monotonic() is the same clock, so kill time and stamp compare directly.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import peers, sut

C_SOURCE = r"""
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);  /* first: anything before it is not our cost */
    if (argc < 2) return 2;
    FILE *f = fopen(argv[1], "a");
    if (f == NULL) return 1;
    fprintf(f, "%lld.%09ld %d\n", (long long)ts.tv_sec, ts.tv_nsec, (int)getpid());
    fclose(f);
    for (;;) pause();
}
"""

# Only if gcc is missing: Python's start-up adds ~10-20 ms of noise to both sides.
PY_SOURCE = (
    "import os, signal, sys, time\n"
    "t = time.clock_gettime(time.CLOCK_MONOTONIC)\n"
    "with open(sys.argv[1], 'a') as f: f.write(f'{t:.9f} {os.getpid()}\\n')\n"
    "while True: signal.pause()\n"
)
WAIT = 10.0  # bound on one restart; far above anything a healthy supervisor needs


def build_child(workdir: Path) -> list[str]:
    """The stamping child's argv (without the stamp file): C if gcc exists, else Python."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return ["python3", "-S", "-c", PY_SOURCE]
    source, exe = workdir / "stamp.c", workdir / "stamp"
    source.write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-o", str(exe), str(source)], check=True)
    return [str(exe)]


def read_stamps(path: Path) -> list[tuple[float, int]]:
    """(monotonic seconds, pid) per complete line; a half-written last line is skipped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    stamps = []
    for line in text.split("\n")[:-1]:
        t, pid = line.split()
        stamps.append((float(t), int(pid)))
    return stamps


def p90(samples: list[float]) -> float:
    """Nearest-rank 90th percentile: an observed value, well defined for 5 samples too."""
    ordered = sorted(samples)
    return ordered[math.ceil(0.9 * len(ordered)) - 1]


def measure(
    kind: str,
    child: list[str],
    workdir: Path,
    kills: int,
    settle: float,
    *,
    flood: dict[str, float] | None = None,
) -> list[float]:
    """Kill `kind`'s only child `kills` times; return each restart latency in seconds.

    With `flood` (a dict, the daemon only) a sibling floods its output meanwhile; the
    dict gets the bytes per second it wrote.
    """
    stamps = workdir / f"{kind}{'-flood' if flood is not None else ''}.stamps"
    latencies: list[float] = []
    phase = random.Random(kills)  # the same kill times on every run
    command = [*child, str(stamps)]
    with sut.running(kind, 1, command, workdir, restart_at_once=True, flood=flood is not None) as s:

        def first_stamp() -> list[tuple[float, int]]:
            s.check_alive()
            return read_stamps(stamps)

        sut.wait_for(first_stamp, WAIT, "the first child")
        for _ in range(kills):
            # Let the supervisor finish with the last start (RUNNING, logs) before the next
            # death, so every kill lands on a child that was up, as in production. A peer
            # that polls is killed at a random phase of its tick (see peers.TICK_S).
            time.sleep(settle + phase.uniform(0.0, peers.TICK_S.get(kind, 0.0)))
            seen = read_stamps(stamps)
            pid = seen[-1][1]
            assert pid in s.children(), f"{kind}: pid {pid} is not its child"
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)

            def new_stamp(seen: list[Any] = seen, pid: int = pid) -> list[tuple[float, int]]:
                s.check_alive()
                return [st for st in read_stamps(stamps)[len(seen) :] if st[1] != pid]

            started_at, _ = sut.wait_for(new_stamp, WAIT, f"{kind} to restart its child")[0]
            latencies.append(started_at - killed_at)
        if flood is not None:
            flood.update(_flood_rate(s))
    return latencies


def _flood_rate(s: sut.Sut) -> dict[str, float]:
    """What the flooding child wrote (its /proc/PID/io wchar) per second of its life."""
    for pid in s.children():
        if Path(f"/proc/{pid}/comm").read_text().strip() != "yes":
            continue
        io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        age = uptime - ticks / os.sysconf("SC_CLK_TCK")
        return {"flood_mb_per_s": int(io["wchar"]) / age / 1e6}
    return {}


def run(workdir: Path, kills: int, settle: float) -> dict[str, Any]:
    """Both systems, one after the other, on the same child binary."""
    child = build_child(workdir)
    results: dict[str, Any] = {"kills": kills, "child": "c" if len(child) == 1 else "python"}
    for kind in sut.KINDS:
        samples = measure(kind, child, workdir, kills, settle)
        results[kind] = {
            "samples_ms": [round(x * 1000, 3) for x in samples],
            "median_ms": statistics.median(samples) * 1000,
            "p90_ms": p90(samples) * 1000,
        }
    rate: dict[str, float] = {}
    samples = measure("daemon", child, workdir, kills, settle, flood=rate)
    quiet = results["daemon"]
    results["daemon_flood"] = {
        "samples_ms": [round(x * 1000, 3) for x in samples],
        "median_ms": statistics.median(samples) * 1000,
        "p90_ms": p90(samples) * 1000,
        "median_ratio": statistics.median(samples) * 1000 / quiet["median_ms"],
        "p90_ratio": p90(samples) * 1000 / quiet["p90_ms"],
        **rate,
    }
    return results
