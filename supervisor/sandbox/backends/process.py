"""`backend = "process"`: a sandbox is a private directory plus rlimits; no Docker needed.

Each command runs in the sandbox's directory, in its own process group, with a scrubbed
environment (HOME and TMPDIR point into the sandbox) and the configured rlimits. The
limits are set by `prlimit(1)` exec'ing the command, so the daemon keeps its cheap
vfork spawn (a Python pre-exec hook would force a full fork of the daemon) and no shell
ever parses the user's argv. Wall-clock timeouts kill the whole group; output beyond
`output_limit` is drained and dropped, and the result says it was truncated.

Note: the process limit (RLIMIT_NPROC) counts every process of the user and does not
bind root; memory is address space (RLIMIT_AS).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from supervisor.config.environment import ProcessLimits
from supervisor.errors import SandboxStateError
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.capture import run_captured
from supervisor.sandbox.instance import ExecResult

PRLIMIT = shutil.which("prlimit") or "/usr/bin/prlimit"


def limit_prefix(limits: ProcessLimits) -> list[str]:
    """The `prlimit ... --` argv prefix that applies `limits` (empty when none are set)."""
    args: list[str] = []
    if limits.cpu_time is not None:
        args.append(f"--cpu={max(1, round(limits.cpu_time))}")
    if limits.memory is not None:
        args.append(f"--as={limits.memory}")
    if limits.open_files is not None:
        args.append(f"--nofile={limits.open_files}")
    if limits.processes is not None:
        args.append(f"--nproc={limits.processes}")
    if limits.file_size is not None:
        args.append(f"--fsize={limits.file_size}")
    return [PRLIMIT, *args, "--"] if args else []


class ProcessInstance:
    """One process sandbox: a directory that commands run in."""

    def __init__(self, backend: ProcessBackend, workdir: Path) -> None:
        self._backend = backend
        self.workdir = workdir
        # Not the daemon's environment: it may hold secrets (tokens, passwords) that the
        # code run in a sandbox has no business seeing.
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PWD": str(workdir),
        }
        self._stopped = False

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        env: Mapping[str, str] | None = None,
    ) -> ExecResult:
        if self._stopped or not self.workdir.is_dir():
            raise SandboxStateError(f"sandbox directory {self.workdir} is gone")
        return await run_captured(
            self._backend.launcher,
            [*self._backend.prefix, *argv],
            cwd=self.workdir,
            env={**self._env, **(env or {})},
            timeout=timeout,
            output_limit=self._backend.output_limit,
        )

    async def run_script(self, script: str, *, timeout: float) -> ExecResult:
        return await self.exec(["sh", "-c", script], timeout=timeout)

    async def put(self, source: Path, dest: str) -> None:
        target = (self.workdir / dest).resolve()
        if not target.is_relative_to(self.workdir.resolve()):
            raise ValueError(f"destination {dest!r} leaves the sandbox directory")

        def copy() -> None:
            if source.is_dir():
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                final = target / source.name if target.is_dir() else target
                final.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, final)

        await trio.to_thread.run_sync(copy)

    async def check(self) -> None:
        if not self.workdir.is_dir():
            raise SandboxStateError(f"sandbox directory {self.workdir} is gone")

    async def wait_dead(self) -> str:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await trio.to_thread.run_sync(shutil.rmtree, self.workdir, True)

    def connection(self) -> dict[str, Any]:
        return {"workdir": str(self.workdir)}


class ProcessBackend:
    """Makes process sandboxes under `root` (the daemon's state dir, per environment)."""

    name = "process"

    def __init__(
        self, launcher: LocalLauncher, root: Path, limits: ProcessLimits, output_limit: int
    ) -> None:
        self.launcher = launcher
        self.root = root
        self.prefix = limit_prefix(limits)
        self.output_limit = output_limit

    async def reset(self) -> None:
        """Remove every sandbox directory a previous run left (called once, at start)."""
        await trio.to_thread.run_sync(shutil.rmtree, self.root, True)

    async def create(self, sandbox_id: str) -> ProcessInstance:
        workdir = self.root / sandbox_id.replace("/", "__").replace(":", "_")

        def make() -> None:
            if workdir.exists():  # left by a run that was killed: start clean
                shutil.rmtree(workdir, ignore_errors=True)
            workdir.mkdir(parents=True, mode=0o700)

        try:
            await trio.to_thread.run_sync(make)
        except OSError as exc:
            raise SandboxStateError(
                f"cannot create {workdir}: {os.strerror(exc.errno or 0)}"
            ) from exc
        return ProcessInstance(self, workdir)
