"""Metrics scrape: `/metrics` latency with many resources and sandboxes, and what a scrape
in progress does to the rest of the API.

The daemon runs `n` sleepers (process resources) and `sandboxes` warm `process`
sandboxes, split over environments of at most `per_env` each (min_ready = max_size).
We time the bring-up (launch until `daemon_ready`, which waits for every environment's
`min_ready`), then 50 sequential scrapes of `/metrics` on a kept-alive connection (the
daemon reuses its last page while the event bus is quiet, for up to a second), 10 fresh
renders (scrapes 1.1 s apart, as Prometheus would see them), then
`GET /healthz` and `GET /v1/resources` calls, once with the daemon otherwise idle and
once while another connection scrapes `/metrics` back to back.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import trio

from bench import apiload, sut

COMMAND = ["sleep", "100000"]


def config(workdir: Path, n: int, sandboxes: int, per_env: int) -> tuple[str, list[int]]:
    """The daemon's config and the size of each environment."""
    envs = math.ceil(sandboxes / per_env) if sandboxes else 0
    sizes = [sandboxes // envs + (i < sandboxes % envs) for i in range(envs)]
    text = sut.daemon_toml([COMMAND] * n, workdir)
    for i, size in enumerate(sizes):
        text += apiload.environment_toml(f"e{i}", size) + "\n"
    return text, sizes


async def _timed(conn: apiload.Connection, target: str, calls: int) -> tuple[list[float], int]:
    """`calls` GETs of `target` (after one untimed), and the last body's size."""
    size = len(await apiload.call(conn, "GET", target, 200))
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        size = len(await apiload.call(conn, "GET", target, 200))
        samples.append(time.perf_counter() - started)
    return samples, size


async def _measure(socket: Path, scrapes: int, calls: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    conn = await apiload.Connection.open(socket)
    scraper = await apiload.Connection.open(socket)
    try:
        samples, size = await _timed(conn, "/metrics", scrapes)
        results["metrics"] = {**apiload.summary(samples), "bytes": size}
        # Back to back, the daemon reuses its last page while nothing changed (for up to
        # a second); Prometheus scrapes every 15 s or so, so time fresh renders too.
        fresh = []
        for _ in range(max(1, scrapes // 5)):
            await trio.sleep(1.1)
            started = time.perf_counter()
            size = len(await apiload.call(conn, "GET", "/metrics", 200))
            fresh.append(time.perf_counter() - started)
        results["metrics fresh"] = {**apiload.summary(fresh), "bytes": size}
        for target in ("/healthz", "/v1/resources"):
            samples, size = await _timed(conn, target, calls)
            results[f"idle {target}"] = {**apiload.summary(samples), "bytes": size}
        background = 0

        async def scrape_forever() -> None:
            nonlocal background
            while True:
                await apiload.call(scraper, "GET", "/metrics", 200)
                background += 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(scrape_forever)
            await trio.sleep(0.2)  # the first scrape is under way
            for target in ("/healthz", "/v1/resources"):
                samples, size = await _timed(conn, target, calls)
                results[f"scraped {target}"] = {**apiload.summary(samples), "bytes": size}
            nursery.cancel_scope.cancel()
        results["background_scrapes"] = background
    finally:
        await conn.aclose()
        await scraper.aclose()
    return results


def run(workdir: Path, *, n: int, sandboxes: int, per_env: int, scrapes: int, calls: int) -> Any:
    """Bring the daemon up with `n` sleepers and `sandboxes` sandboxes, then measure."""
    text, sizes = config(workdir, n, sandboxes, per_env)
    results: dict[str, Any] = {"n": n, "sandboxes": sandboxes, "environments": sizes}
    with apiload.running(text, workdir) as daemon:
        results["ready_s"] = daemon.wait_ready(n, timeout=600)
        results.update(trio.run(_measure, workdir / "control.sock", scrapes, calls))
        results["daemon_rss_mb"] = _rss_mb(daemon.pid)
    return results


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
