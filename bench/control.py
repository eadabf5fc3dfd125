"""Control latency: how long one `status` round trip over N supervised sleepers takes.

Two ways per system: an in-process client that stays connected (what a program or a
dashboard pays per call) and the command-line tool run as a subprocess (what a person or
a shell script pays, interpreter start-up included). Every call asks for the status of
all N programs.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import peers, sut
from supervisor.api.client import Client

COMMAND = ["sleep", "100000"]


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: an observed value."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(samples: list[float]) -> dict[str, Any]:
    return {
        "calls": len(samples),
        "median_ms": statistics.median(samples) * 1000,
        "p99_ms": percentile(samples, 0.99) * 1000,
        "samples_ms": [round(x * 1000, 3) for x in samples],
    }


def timed(call: Callable[[], object], count: int) -> list[float]:
    call()  # a warm-up: connect, import, fill caches; not counted
    samples = []
    for _ in range(count):
        t = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t)
    return samples


def run_ok(argv: list[str], expect: str) -> Callable[[], None]:
    """A call that runs `argv` and checks that its output mentions `expect`."""

    def call() -> None:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
        if expect not in done.stdout:
            raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr[-1000:]}")

    return call


def our_cli() -> list[str]:
    script = Path(sys.executable).with_name("supervisor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]


def measure(kind: str, n: int, workdir: Path, calls: int, cli_calls: int) -> dict[str, Any]:
    with sut.running(kind, n, COMMAND, workdir) as s:
        s.wait_ready(n)
        sut.wait_for(lambda: len(s.children()) >= n, 60, f"{kind}: {n} children")
        last = f"r{n - 1}"
        if kind == "daemon":
            sock = workdir / "control.sock"
            with Client.connect(socket_path=sock) as client:

                def status() -> None:
                    if len(client.resources()) != n:
                        raise RuntimeError("daemon: wrong resource count")

                api = timed(status, calls)
            cli = timed(run_ok([*our_cli(), "status", "--socket", str(sock)], last), cli_calls)
            return {"api": summary(api), "cli": summary(cli)}
        if kind == "supervisord":
            rpc = peers.supervisord_rpc(workdir)

            def info() -> None:
                if len(rpc.supervisor.getAllProcessInfo()) != n:  # type: ignore[arg-type]
                    raise RuntimeError("supervisord: wrong process count")

            api = timed(info, calls)
            cli = timed(run_ok(peers.ctl(kind, workdir, "status"), last), cli_calls)
            return {"api": summary(api), "cli": summary(cli)}
        # circus: its Python client only runs in its own venv, so that venv times the calls.
        done = subprocess.run(
            peers.circus_client_argv(workdir, calls + 1),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"circus client failed: {done.stderr[-2000:]}")
        api = json.loads(done.stdout)[1:]  # the first call is the warm-up
        cli = timed(run_ok(peers.ctl(kind, workdir, "status"), last), cli_calls)
        return {"api": summary(api), "cli": summary(cli)}


def run(workdir: Path, n: int, calls: int, cli_calls: int) -> dict[str, Any]:
    """Each system with a control plane, one after the other, with `n` sleepers."""
    results: dict[str, Any] = {"n": n, "calls": calls, "cli_calls": cli_calls}
    for kind in sut.MANAGERS:
        sub = workdir / kind
        sub.mkdir()
        results[kind] = measure(kind, n, sub, calls, cli_calls)
    return results
