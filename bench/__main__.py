"""Run every benchmark, save the numbers as JSON and print one markdown table.

python -m bench             # the full run: a few minutes
python -m bench --quick     # smoke mode: tiny N, 5 kills, 3 s window
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import idle_cpu, restart_latency

RESULTS = Path(__file__).with_name("results")


def machine() -> str:
    """One line that says what the numbers were measured on."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.partition(":")[2].strip()
            break
    return (
        f"{len(os.sched_getaffinity(0))} CPUs ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def revision() -> str:
    """The commit under test, "+dirty" if supervisor/ differs from it."""
    git = ["git", "-C", str(Path(__file__).parent.parent)]
    try:
        sha, status = (
            subprocess.run([*git, *args], capture_output=True, check=True).stdout.decode().strip()
            for args in (["rev-parse", "--short", "HEAD"], ["status", "--porcelain", "supervisor"])
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if status else "")


def ratio(ours: float, floor: float, resolution: float = 0.0) -> str:
    """ours / floor; a floor below the measurement's resolution only bounds the ratio."""
    if floor > resolution / 2:
        return f"{ours / floor:.2f}x"
    if ours <= resolution / 2:
        return "n/a (both 0)"
    # The floor measured 0 (less than one tick), so the true ratio is above this.
    return f">{ours / resolution:.0f}x (floor 0)"


def table(latency: dict[str, Any], idle: dict[str, Any], sizes: list[int]) -> str:
    """The results as one markdown table: ours, floor, ratio per row."""
    rows = [
        "| benchmark | metric | ours (daemon) | floor | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    d, f = latency["daemon"], latency["floor"]
    kills = latency["kills"]
    for key, label in (("median_ms", "median (ms)"), ("p90_ms", "p90 (ms)")):
        rows.append(
            f"| restart latency, {kills} kills | {label} | {d[key]:.2f} | {f[key]:.2f} "
            f"| {ratio(d[key], f[key])} |"
        )
    tick = idle["tick_s"]
    for n in sizes:
        d, f = idle[str(n)]["daemon"], idle[str(n)]["floor"]
        window = d["window_s"]
        metrics = (
            ("cpu_s", f"CPU s in {window:.0f} s", "{:.2f}", tick),
            ("cpu_pct", "CPU %", "{:.3f}", 100 * tick / window),
            ("rss_mb", "RSS incl. helpers (MiB)", "{:.1f}", 0.0),
            ("ready_s", "time to ready (s)", "{:.2f}", 0.0),
        )
        for key, label, fmt, resolution in metrics:
            rows.append(
                f"| idle, N={n} sleepers | {label} | {fmt.format(d[key])} | "
                f"{fmt.format(f[key])} | {ratio(d[key], f[key], resolution)} |"
            )
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny N, few kills")
    parser.add_argument("--window", type=float, help="idle CPU window in seconds (default 60)")
    args = parser.parse_args(argv)
    if args.quick:
        sizes, kills, window, kill_settle, idle_settle = [3], 5, 3.0, 0.05, 0.5
    else:
        sizes, kills, window, kill_settle, idle_settle = [100, 500], 50, 60.0, 0.2, 2.0
    window = args.window if args.window is not None else window

    code = revision()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        print(f"restart latency: {kills} kills each ...", file=sys.stderr)
        (workdir / "latency").mkdir()
        latency = restart_latency.run(workdir / "latency", kills, kill_settle)
        print(f"idle CPU: N={sizes}, {window:g} s windows ...", file=sys.stderr)
        (workdir / "idle").mkdir()
        idle = idle_cpu.run(workdir / "idle", sizes, window, idle_settle)
    elapsed = time.monotonic() - started

    host, code_after = machine(), revision()
    if code_after != code:  # the daemon is imported afresh by every run: numbers are mixed
        code = f"{code} -> {code_after} (CHANGED DURING THE RUN: rerun)"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    report = {
        "machine": host,
        "revision": code,
        "quick": args.quick,
        "elapsed_s": elapsed,
        "restart_latency": latency,
        "idle_cpu": idle,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(table(latency, idle, sizes))
    print()
    print(f"Machine: {host}")
    print(f"Code: {code}; took {elapsed:.0f} s; raw numbers in {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
