"""The benchmarks stay runnable: their smoke mode runs once per test run (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


# The smoke run takes about 140 s on a 2-CPU machine (30 s of it the swarm's, which
# builds a private 2-node swarm): past the suite's 120 s default.
@pytest.mark.timeout(420)
def test_benchmarks_run_in_quick_mode() -> None:
    """`python -m bench --quick` completes and prints its table."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=420,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| restart latency, 5 kills | median (ms) |" in result.stdout
    assert "| restart latency, 5 kills | quiet | a sibling floods (" in result.stdout
    assert "| idle, N=3 sleepers | CPU s in 3 s |" in result.stdout
    assert "| 1 client, proactive setup on |" in result.stdout
    assert "| 4 clients, fresh connection, 40 cycles |" in result.stdout
    assert "| one exec of `true` | median (ms) |" in result.stdout  # isolation's costs
    assert "| swarm/docker |" in result.stdout  # swarm sandboxes beside docker ones
    assert "| `GET /metrics`, fresh render (1.1 s apart) |" in result.stdout
    assert "| MCP, streamable HTTP (`/mcp`) |" in result.stdout
    assert "| first render (navigation to 5 rows) |" in result.stdout  # the console's
