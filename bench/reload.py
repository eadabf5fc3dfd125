"""Reload: change one program's command among N, apply it, count the bystanders hit.

Each system runs N `sleep 100000` programs; the config is rewritten with program r0 running
`sleep 100001` instead, and applied the system's own way (ours: `Client.reload()`;
supervisord: `supervisorctl reread` + `supervisorctl update`; circus: `circusctl
reloadconfig`). Measured: how long the apply command takes, how long until the changed
program runs again, and how many of the N-1 OTHER children got a new pid (ideally 0).
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import peers, sut
from supervisor.api.client import Client

OLD, NEW = ["sleep", "100000"], ["sleep", "100001"]
WAIT = 120.0  # bound on the changed program coming back (and on the others settling)


class Cmdlines:
    """pid -> argv of a supervisor's children, reading /proc once per new pid."""

    def __init__(self, s: sut.Sut) -> None:
        self.sut = s
        self.known: dict[int, list[str]] = {}

    def now(self) -> dict[int, list[str]]:
        current = {}
        for pid in self.sut.children():
            if pid not in self.known:
                try:
                    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
                except FileNotFoundError:
                    continue
                argv = [a.decode() for a in raw.split(b"\0")[:-1]]
                if argv not in (OLD, NEW):  # forked but not yet exec'd, or a helper
                    current[pid] = argv
                    continue
                self.known[pid] = argv
            current[pid] = self.known[pid]
        return current


def apply(kind: str, workdir: Path) -> dict[str, Any]:
    """Tell `kind` to pick up its rewritten config; returns what it answered."""
    if kind == "daemon":
        with Client.connect(socket_path=workdir / "control.sock", timeout=WAIT) as client:
            plan = client.reload()
        return {k: len(v) if isinstance(v, list) else v for k, v in plan.items()}
    if kind == "supervisord":
        commands = [peers.ctl(kind, workdir, "reread"), peers.ctl(kind, workdir, "update")]
    else:
        commands = [peers.ctl(kind, workdir, "reloadconfig")]
    out = []
    for argv in commands:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{kind}: {argv[-1]} exited {done.returncode}: {done.stderr}")
        out.append(done.stdout.strip()[-300:])
    return {"output": out}


def measure(kind: str, n: int, workdir: Path) -> dict[str, Any]:
    with sut.running(kind, n, OLD, workdir) as s:
        s.wait_ready(n)
        procs = Cmdlines(s)
        sut.wait_for(lambda: len(procs.now()) >= n, WAIT, f"{kind}: {n} children")
        time.sleep(1.0)  # let the start-up's tail (logs, RUNNING transitions) drain
        before = procs.now()
        sut.write_config(kind, [NEW, *[OLD] * (n - 1)], workdir)
        t0 = time.monotonic()
        answer = apply(kind, workdir)
        applied_s = time.monotonic() - t0

        def new_running() -> bool:
            s.check_alive()
            return any(argv == NEW for argv in procs.now().values())

        sut.wait_for(new_running, WAIT, f"{kind}: the changed program to run")
        running_s = time.monotonic() - t0
        # Any bystander a system restarted is given time to come back before counting.
        with contextlib.suppress(TimeoutError):
            sut.wait_for(lambda: len(procs.now()) >= n, WAIT, f"{kind}: {n} children again")
        after = procs.now()
        olds = [pid for pid, argv in after.items() if argv == OLD]
        return {
            "n": n,
            "apply_s": applied_s,
            "changed_running_s": running_s,
            # Bystanders (still `sleep 100000`) running under a pid they did not have before.
            "others_restarted": sum(pid not in before for pid in olds),
            "others_missing": n - 1 - len(olds),
            "children_after": len(after),
            "answer": answer,
        }


def run(workdir: Path, sizes: list[int]) -> dict[str, Any]:
    """For each N, each system with a config reload, one after the other."""
    results: dict[str, Any] = {}
    for n in sizes:
        results[str(n)] = {}
        for kind in sut.MANAGERS:
            sub = workdir / f"{kind}-{n}"
            sub.mkdir()
            results[str(n)][kind] = measure(kind, n, sub)
    return results
