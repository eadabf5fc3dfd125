"""Run every benchmark, save the numbers as JSON and print one markdown table.

python -m bench                        # the full run: about 15 minutes
python -m bench --quick                # smoke mode: tiny N, 5 kills, 3 s windows
python -m bench --only sandbox,scrape  # some benchmarks only
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
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    console,
    control,
    idle_cpu,
    mcp_roundtrip,
    peers,
    reload,
    report,
    restart_latency,
    sandbox_pool,
    scrape,
    swarm,
)

RESULTS = Path(__file__).with_name("results")
BENCHMARKS = (
    "latency", "idle", "control", "reload", "sandbox", "swarm", "scrape", "mcp", "console",
)  # fmt: skip
PEER_BENCHMARKS = ("latency", "idle", "control", "reload")  # the supervisord/circus table


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


@dataclass(frozen=True, slots=True)
class Plan:
    """How much each benchmark does: the full run or the smoke mode."""

    sizes: list[int]
    kills: int
    window: float
    kill_settle: float
    idle_settle: float
    control_n: int
    calls: int
    cli_calls: int
    reload_sizes: list[int]
    pool_clients: list[int]
    pool_window: float
    pool_warmup: float
    http_clients: list[int]
    http_calls: int
    isolation_samples: int
    scrape_n: int
    sandboxes: int
    per_env: int
    scrapes: int
    api_calls: int
    mcp_calls: int
    swarm_creates: int
    swarm_acquires: int


QUICK = Plan(
    sizes=[3], kills=5, window=3.0, kill_settle=0.05, idle_settle=0.5,
    control_n=5, calls=20, cli_calls=5, reload_sizes=[5],
    pool_clients=[1], pool_window=0.3, pool_warmup=0.1, http_clients=[1, 4], http_calls=40,
    isolation_samples=20, scrape_n=5, sandboxes=20, per_env=10, scrapes=5, api_calls=10,
    mcp_calls=5, swarm_creates=2, swarm_acquires=3,
)  # fmt: skip
FULL = Plan(
    sizes=[100, 500, 1000], kills=50, window=30.0, kill_settle=0.2, idle_settle=2.0,
    control_n=100, calls=200, cli_calls=30, reload_sizes=[100, 1000],
    pool_clients=[1, 4], pool_window=5.0, pool_warmup=1.0, http_clients=[1, 16, 64],
    http_calls=3200, isolation_samples=300,
    # 10,000 process sandboxes come up in one environment in well under a minute.
    scrape_n=1000, sandboxes=10_000, per_env=10_000, scrapes=50, api_calls=200,
    mcp_calls=200, swarm_creates=20, swarm_acquires=50,
)  # fmt: skip


def run_benchmarks(only: Sequence[str], plan: Plan, workdir: Path) -> dict[str, Any]:
    """Run the chosen benchmarks one after the other; their results by JSON key."""
    results: dict[str, Any] = {}
    phase = time.monotonic()

    def say(what: str) -> None:
        print(what, file=sys.stderr)

    def took() -> None:
        nonlocal phase
        phase, before = time.monotonic(), phase
        say(f"  ({phase - before:.0f} s)")

    for name in only:
        (workdir / name).mkdir()
    if "latency" in only:
        say(f"restart latency: {plan.kills} kills each ...")
        results["restart_latency"] = restart_latency.run(
            workdir / "latency", plan.kills, plan.kill_settle
        )
        took()
    if "idle" in only:
        say(f"idle CPU: N={plan.sizes}, {plan.window:g} s windows ...")
        results["idle_cpu"] = idle_cpu.run(
            workdir / "idle", plan.sizes, plan.window, plan.idle_settle
        )
        took()
    if "control" in only:
        say(f"control latency: N={plan.control_n}, {plan.calls}/{plan.cli_calls} calls ...")
        results["control_latency"] = control.run(
            workdir / "control", plan.control_n, plan.calls, plan.cli_calls
        )
        took()
    if "reload" in only:
        say(f"reload: N={plan.reload_sizes} ...")
        results["reload"] = reload.run(workdir / "reload", plan.reload_sizes)
        took()
    if "sandbox" in only:
        say(
            f"sandbox pool: clients={plan.pool_clients}, {plan.pool_window:g} s windows; "
            f"HTTP acquire: clients={plan.http_clients} ..."
        )
        results["sandbox_pool"] = sandbox_pool.run(
            workdir / "sandbox",
            client_counts=plan.pool_clients,
            window=plan.pool_window,
            warmup=plan.pool_warmup,
            http_clients=plan.http_clients,
            http_calls=plan.http_calls,
            isolation_samples=plan.isolation_samples,
        )
        took()
    if "swarm" in only:
        say(
            f"swarm vs docker: {plan.swarm_creates} cold creates, {plan.swarm_acquires} acquires ..."
        )
        results["swarm"] = swarm.run(workdir / "swarm", plan.swarm_creates, plan.swarm_acquires)
        took()
    if "scrape" in only:
        say(f"metrics scrape: N={plan.scrape_n}, {plan.sandboxes} sandboxes ...")
        results["scrape"] = scrape.run(
            workdir / "scrape",
            n=plan.scrape_n,
            sandboxes=plan.sandboxes,
            per_env=plan.per_env,
            scrapes=plan.scrapes,
            calls=plan.api_calls,
        )
        took()
    if "mcp" in only:
        say(f"MCP round trips: {plan.mcp_calls} calls each way ...")
        results["mcp"] = mcp_roundtrip.run(workdir / "mcp", plan.mcp_calls)
        took()
    if "console" in only:
        say(f"web console: N={plan.scrape_n}, {plan.sandboxes} sandboxes, headless Chromium ...")
        results["console"] = console.run(
            workdir / "console", n=plan.scrape_n, sandboxes=plan.sandboxes, per_env=plan.per_env
        )
        took()
    return results


def tables(only: Sequence[str], results: dict[str, Any]) -> str:
    """The peers' table (when all four of its benchmarks ran), then the others'."""
    out = []
    if all(name in only for name in PEER_BENCHMARKS):
        out.append(
            report.table(
                results["restart_latency"],
                results["idle_cpu"],
                results["control_latency"],
                results["reload"],
            )
        )
    elif set(only) & set(PEER_BENCHMARKS):
        out.append("(the peers' table needs latency, idle, control and reload: see the JSON)")
    if "latency" in only:
        out.append(report.flood_table(results["restart_latency"]))
    if "sandbox" in only:
        out.append(report.sandbox_table(results["sandbox_pool"]))
        out.append(report.isolation_table(results["sandbox_pool"]))
    if "swarm" in only:
        out.append(report.swarm_table(results["swarm"]))
    if "scrape" in only:
        out.append(report.scrape_table(results["scrape"]))
    if "mcp" in only:
        out.append(report.mcp_table(results["mcp"]))
    if "console" in only:
        out.append(console.table(results["console"]))
    return "\n\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke mode: tiny N, few kills")
    parser.add_argument("--window", type=float, help="idle CPU window in seconds (default 30)")
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})",
    )
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := sorted(set(only) - set(BENCHMARKS)):
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {BENCHMARKS}")
    plan = QUICK if args.quick else FULL
    if args.window is not None:
        plan = replace(plan, window=args.window)

    started = time.monotonic()
    # Before anything runs: a peer that cannot install fails here.
    if set(only) & set(PEER_BENCHMARKS):
        for peer in peers.PEERS:
            peers.ensure(peer)
        if not args.quick:
            os.environ["BENCH_DAEMON_PYTHON"] = str(peers.ensure_ours())
    if "sandbox" in only:
        sandbox_pool.ensure_langfun()
    code = revision()
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        results = run_benchmarks(only, plan, Path(tmp))
    elapsed = time.monotonic() - started

    host, code_after = machine(), revision()
    if code_after != code:  # the daemon is imported afresh by every run: numbers are mixed
        code = f"{code} -> {code_after} (CHANGED DURING THE RUN: rerun)"
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    header = {"machine": host, "revision": code, "quick": args.quick, "elapsed_s": elapsed}
    out.write_text(json.dumps({**header, **results, "peers": peers.versions()}, indent=2) + "\n")

    print(tables(only, results))
    print()
    print(f"Machine: {host}")
    pins = [" ".join(p) for p in peers.versions().values()]
    if "sandbox" in only:
        pins.append(" ".join(sandbox_pool.LANGFUN_PINS))
    print("Peers: " + "; ".join(pins))
    print(f"Code: {code}; took {elapsed:.0f} s; raw numbers in {os.path.relpath(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
