"""A command running in an isolated sandbox, as `sandbox.capture.run_captured` drives it.

It answers like a host child's `ProcessHandle` (`captured`, `exited`, `wait`,
`signal_group`, `kill`), over its sandbox's channel to the agent: a kill is a request to
the agent, and a kill the agent does not confirm within `KILL_GRACE` costs the whole
sandbox (killed from outside), never a wait without end.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import trio

from supervisor.supervision.policy import Termination, describe_exit

KILL_GRACE = 5.0  # the agent confirms a kill within this, or the sandbox is killed
KILLED = describe_exit(-signal.SIGKILL)


class Channel(Protocol):
    """The sandbox's side of the agent's socket (`namespace.Namespace`)."""

    def send_nowait(self, message: Mapping[str, Any], fds: Sequence[int] = ()) -> None: ...
    async def until(self, event: trio.Event) -> None: ...
    async def abort(self, reason: str) -> None: ...


class SandboxProcess:
    """A command running in a sandbox: its exit, its process group, its output pipes."""

    def __init__(self, namespace: Channel, ident: int, captured: tuple[int, int]) -> None:
        self.ident = ident
        self.captured: tuple[int, int] | None = captured
        self.answered = trio.Event()
        self.exited = trio.Event()
        self.failure: str | None = None
        self.termination: Termination | None = None
        self._namespace = namespace
        self._kill_deadline: float | None = None

    async def wait(self) -> Termination:
        while not self.exited.is_set():
            deadline = self._kill_deadline if self._kill_deadline is not None else float("inf")
            with trio.move_on_at(deadline):
                await self._namespace.until(self.exited)
            if not self.exited.is_set() and trio.current_time() >= deadline:
                await self._namespace.abort("the agent did not confirm a kill")
        assert self.termination is not None
        return self.termination

    def signal_group(self, sig: int) -> None:
        """Signal the command's process group, in the sandbox."""
        if self.exited.is_set():
            return
        self._namespace.send_nowait({"op": "signal", "id": self.ident, "sig": int(sig)})
        if sig == signal.SIGKILL and self._kill_deadline is None:
            self._kill_deadline = trio.current_time() + KILL_GRACE

    def kill(self) -> None:
        self.signal_group(signal.SIGKILL)

    def answer(self, message: Mapping[str, Any]) -> None:
        op = message["op"]
        if op == "failed":
            self.failure = spawn_error(message)
            self.answered.set()
            self.finish(KILLED)
        elif op == "started":
            self.answered.set()
        elif op == "exited":
            self.answered.set()
            self.finish(describe_exit(int(message["status"])))

    def finish(self, termination: Termination) -> None:
        if not self.exited.is_set():
            self.termination = termination
            self.exited.set()


def spawn_error(message: Mapping[str, Any]) -> str:
    errno_ = int(message.get("errno") or 0)
    what = message.get("filename")
    error = str(message.get("error") or "")
    if errno_ == 2:
        return f"command not found: {what!r}" if what else f"command not found ({error})"
    if errno_ == 13:
        return f"permission denied executing {what!r}"
    if errno_ == 11:
        return f"cannot run {what!r}: the sandbox is at its process limit"
    return f"cannot execute {what!r}: {error}" if what else f"cannot execute: {error}"
