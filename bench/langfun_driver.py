"""Session cycles per second of langfun.env's TestingEnvironment; runs in langfun's venv.

python langfun_driver.py WINDOW_S WARMUP_S CLIENTS:PROACTIVE(0|1) ...  ->  JSON on stdout

Standard library and langfun only: it runs on the langfun venv's interpreter, which has
no `supervisor` or `bench` installed. The work per cycle mirrors `sandbox_pool.ours()`:
acquire a sandbox from a pool of 4, start a session (one feature's `setup_session`,
which only counts), one activity (`TestingSandbox.shell`, in memory), end the session
(its `teardown_session`, which only counts) and give the sandbox back.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from langfun.env import base_feature, test_utils  # type: ignore[import-not-found]

POOL = 4


class Counting(base_feature.BaseFeature):  # type: ignore[misc]
    """A feature whose session hooks only count: the pool machinery is what we time."""

    def _on_bound(self) -> None:
        super()._on_bound()
        self.session_hooks = 0

    def _setup_session(self) -> None:
        self.session_hooks += 1

    def _teardown_session(self) -> None:
        self.session_hooks += 1


def cycles(env: object, clients: int, seconds: float) -> tuple[int, float]:
    """(cycles done, seconds taken) by `clients` threads looping for `seconds`."""
    done = [0] * clients
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        while time.perf_counter() < deadline:
            with env.sandbox() as sandbox:  # type: ignore[attr-defined]
                sandbox.shell("true")
            done[i] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done), time.perf_counter() - started


def measure(clients: int, proactive: bool, window: float, warmup: float) -> dict[str, Any]:
    env = test_utils.TestingEnvironment(
        pool_size=POOL,
        features={"counting": Counting()},
        proactive_session_setup=proactive,
        # The testing default (0 s) makes the housekeeping thread spin. 1 s keeps it
        # idle, and shutdown joins that thread, so a longer interval only slows the
        # bench down. No keepalive pings and no feature housekeeping (both None): no
        # sandbox housekeeping thread at all.
        housekeep_interval=1.0,
        sandbox_keepalive_interval=None,
        outage_grace_period=60.0,
    )
    with env:
        cycles(env, clients, warmup)
        count, took = cycles(env, clients, window)
    return {"cycles": count, "seconds": took, "per_s": count / took}


def main() -> None:
    window, warmup = float(sys.argv[1]), float(sys.argv[2])
    results = []
    for spec in sys.argv[3:]:
        clients, _, proactive = spec.partition(":")
        results.append(measure(int(clients), proactive == "1", window, warmup))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
