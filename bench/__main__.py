"""Run every benchmark, save the numbers as JSON and print one markdown table.

python -m bench             # the full run: about 12 minutes
python -m bench --quick     # smoke mode: tiny N, 5 kills, 3 s windows (about a minute)
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

from bench import control, idle_cpu, peers, reload, report, restart_latency

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny N, few kills")
    parser.add_argument("--window", type=float, help="idle CPU window in seconds (default 30)")
    args = parser.parse_args(argv)
    if args.quick:
        sizes, kills, window, kill_settle, idle_settle = [3], 5, 3.0, 0.05, 0.5
        control_n, calls, cli_calls, reload_sizes = 5, 20, 5, [5]
    else:
        sizes, kills, window, kill_settle, idle_settle = [100, 500, 1000], 50, 30.0, 0.2, 2.0
        control_n, calls, cli_calls, reload_sizes = 100, 200, 30, [100, 1000]
    window = args.window if args.window is not None else window

    started = time.monotonic()
    for peer in peers.PEERS:  # before anything runs: a peer that cannot install fails here
        peers.ensure(peer)
    code = revision()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        workdir = Path(tmp)
        for name in ("latency", "idle", "control", "reload"):
            (workdir / name).mkdir()
        phase = time.monotonic()

        def took() -> str:
            nonlocal phase
            phase, before = time.monotonic(), phase
            return f"  ({phase - before:.0f} s)"

        print(f"restart latency: {kills} kills each ...", file=sys.stderr)
        latency = restart_latency.run(workdir / "latency", kills, kill_settle)
        print(took(), file=sys.stderr)
        print(f"idle CPU: N={sizes}, {window:g} s windows ...", file=sys.stderr)
        idle = idle_cpu.run(workdir / "idle", sizes, window, idle_settle)
        print(took(), file=sys.stderr)
        print(f"control latency: N={control_n}, {calls}/{cli_calls} calls ...", file=sys.stderr)
        ctl = control.run(workdir / "control", control_n, calls, cli_calls)
        print(took(), file=sys.stderr)
        print(f"reload: N={reload_sizes} ...", file=sys.stderr)
        reloads = reload.run(workdir / "reload", reload_sizes)
        print(took(), file=sys.stderr)
    elapsed = time.monotonic() - started

    host, code_after = machine(), revision()
    if code_after != code:  # the daemon is imported afresh by every run: numbers are mixed
        code = f"{code} -> {code_after} (CHANGED DURING THE RUN: rerun)"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    results = {
        "machine": host,
        "revision": code,
        "quick": args.quick,
        "elapsed_s": elapsed,
        "restart_latency": latency,
        "idle_cpu": idle,
        "control_latency": ctl,
        "reload": reloads,
        "peers": peers.versions(),
    }
    out.write_text(json.dumps(results, indent=2) + "\n")

    print(report.table(latency, idle, ctl, reloads))
    print()
    print(f"Machine: {host}")
    print("Peers: " + "; ".join(" ".join(pins) for pins in peers.versions().values()))
    print(f"Code: {code}; took {elapsed:.0f} s; raw numbers in {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
