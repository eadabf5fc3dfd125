"""The benchmarks stay runnable: their smoke mode runs once per test run (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_benchmarks_run_in_quick_mode() -> None:
    """`python -m bench --quick` completes and prints its table."""
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| restart latency, 5 kills | median (ms) |" in result.stdout
    assert "| idle, N=3 sleepers | CPU s in 3 s |" in result.stdout
