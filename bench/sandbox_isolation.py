"""What isolation costs: a `process` sandbox with `isolation = "bubblewrap"` vs `"none"`.

*Exec*: one `true`, timed from the call to the result, `samples` times each way (after
a few untimed ones): a bare spawn (the launcher with the output captured, which is what
every exec costs at least), the sandbox's exec without isolation (`prlimit` + the
command), the isolated sandbox's exec (a request to the agent, which forks `prlimit` +
the command inside the namespaces), and, for comparison, what the rejected design would cost: a
fresh `bwrap` with the same namespaces and mounts per command. The isolated exec's
overhead is its median minus the bare spawn's (the target: under 2 ms).

*Create*: bringing one sandbox up and stopping it (isolated: a uid, a cgroup, bwrap and
its agent; none: a directory).

*Cycle*: one client on a pool of 1 warm sandbox with proactive setup, each cycle acquire,
`exec(["true"])`, release, as built by the daemon (`runtime.kinds`: isolated, the
session's reset runs at release). langfun's in-process cycle (from `sandbox_pool`'s
cycles/s, 1 client, proactive on) is shown beside it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import trio

from supervisor.config.environment import EnvironmentConfig
from supervisor.launchers.isolation import bubblewrap
from supervisor.launchers.local import LocalLauncher, open_local_launcher
from supervisor.runtime.kinds import BACKENDS, Context
from supervisor.sandbox.backends.process import ProcessBackend, ProcessInstance
from supervisor.sandbox.capture import run_captured
from supervisor.sandbox.environment import open_environment

OUTPUT = 1 << 20


def summary(samples: list[float]) -> dict[str, float]:
    """Median and p90 in ms."""
    ordered = sorted(samples)
    return {
        "median_ms": statistics.median(ordered) * 1000,
        "p90_ms": ordered[int(0.9 * (len(ordered) - 1))] * 1000,
        "samples": len(ordered),
    }


async def timed(call: Callable[[], Awaitable[object]], samples: int) -> dict[str, float]:
    for _ in range(max(3, samples // 10)):
        await call()
    took = []
    for _ in range(samples):
        started = time.perf_counter()
        await call()
        took.append(time.perf_counter() - started)
    return summary(took)


Isolation = Literal["bubblewrap", "none"]
WAYS: tuple[Isolation, ...] = ("none", "bubblewrap")


def config(isolation: Isolation) -> EnvironmentConfig:
    return EnvironmentConfig(
        min_ready=1, max_size=1, isolation=isolation, acquire_timeout=60, keepalive_interval=3600
    )


def backend(launcher: LocalLauncher, state: Path, isolation: Isolation) -> ProcessBackend:
    built, _ = BACKENDS["process"]("bench", config(isolation), Context(launcher, None, state))
    assert isinstance(built, ProcessBackend)
    return built


async def execs(launcher: LocalLauncher, state: Path, samples: int) -> dict[str, Any]:
    """One `true` each way (see the module docstring)."""
    results: dict[str, Any] = {}
    scratch = state / "bare"
    scratch.mkdir(parents=True)

    async def bare() -> None:
        await run_captured(
            launcher, ["true"], cwd=scratch, env={"PATH": "/usr/bin:/bin"},
            timeout=10, output_limit=OUTPUT,
        )  # fmt: skip

    results["bare"] = await timed(bare, samples)
    for isolation in WAYS:
        chosen = backend(launcher, state / isolation, isolation)
        await chosen.reset()
        instance = await chosen.create("bench/0:0")

        async def one(sandbox: ProcessInstance = instance) -> None:
            await sandbox.exec(["true"], timeout=10)

        try:
            results[isolation] = await timed(one, samples)
        finally:
            await instance.stop()
    layout = bubblewrap.SandboxLayout(
        bwrap=bubblewrap.find_bwrap(), python="", network=False, hide=(state,)
    )
    line = layout.argv(scratch, ctl_fd=-1, info_fd=-1, agent_fd=-1)
    fresh = [a for a in line[: line.index("--info-fd")] if a != "--as-pid-1"]

    async def fresh_bwrap() -> None:
        await run_captured(
            launcher, [*fresh, "--", "true"], cwd=scratch, env={"PATH": "/usr/bin:/bin"},
            timeout=10, output_limit=OUTPUT,
        )  # fmt: skip

    results["fresh_bwrap"] = await timed(fresh_bwrap, samples)
    results["overhead_ms"] = results["bubblewrap"]["median_ms"] - results["bare"]["median_ms"]
    return results


async def creates(launcher: LocalLauncher, state: Path, samples: int) -> dict[str, Any]:
    """Bring a sandbox up (and stop it, untimed), each way."""
    results: dict[str, Any] = {}
    for isolation in WAYS:
        chosen = backend(launcher, state / f"create-{isolation}", isolation)
        await chosen.reset()
        took = []
        for i in range(samples):
            started = time.perf_counter()
            instance = await chosen.create(f"bench/{i}:0")
            took.append(time.perf_counter() - started)
            await instance.stop()
        results[isolation] = summary(took)
    return results


async def cycles(launcher: LocalLauncher, state: Path, samples: int) -> dict[str, Any]:
    """Acquire, exec `true`, release on a pool of one, each way."""
    results: dict[str, Any] = {}
    for isolation in WAYS:
        settings = config(isolation)
        ctx = Context(launcher, None, state / f"cycle-{isolation}")
        chosen, extra = BACKENDS["process"]("bench", settings, ctx)
        async with open_environment("bench", settings, chosen, extra) as env:

            async def cycle() -> None:
                async with env.session() as session:
                    await session.exec(["true"])

            results[isolation] = await timed(cycle, samples)
    return results


def run(samples: int) -> dict[str, Any]:
    """Every measurement, `samples` each (creates: a tenth of that, at least 5)."""

    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="bench-isolation-") as tmp:
            state = Path(tmp)
            async with open_local_launcher() as launcher:
                return {
                    "exec": await execs(launcher, state / "exec", samples),
                    "create": await creates(launcher, state / "create", max(5, samples // 10)),
                    "cycle": await cycles(launcher, state / "cycle", samples),
                }

    return trio.run(main)
