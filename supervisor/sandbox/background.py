"""Background commands: an exec that answers at once with a handle, to be followed later.

A background command is an ordinary exec run for the session (through the sandbox's
`Activities`, so it ends when the session does) by a task of the service, with
`ExecOptions` that keep its output here instead of in a response: the raw pieces, within
the output limit per stream like any exec, for readers to take from any index and to
follow until it ends. Its stdin stays open for writes until closed, and signals go to its
process group; both travel on bounded channels that the backend pumps, so a command
that never reads its input makes the writer wait (409), never the daemon's memory grow.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from supervisor.errors import CommandNotFoundError, ConflictError
from supervisor.sandbox.instance import ExecOptions, ExecResult

MAX_COMMANDS = 64  # per session, ended ones included
INPUT_BACKLOG = 64  # writes not yet taken by the command


class Command:
    """One background command: its output so far, its input and signals, its end."""

    def __init__(self, ident: str, what: dict[str, Any]) -> None:
        self.id = ident
        self.what = what  # {"command": argv} or {"script": text}
        self.started_at = time.time()
        self.pieces: list[tuple[str, bytes]] = []
        self.result: ExecResult | None = None
        self.error: Exception | None = None
        self.done = trio.Event()
        self._changed = trio.Event()
        self._input, self._input_out = trio.open_memory_channel[bytes](INPUT_BACKLOG)
        self._signals, self._signals_out = trio.open_memory_channel[int](INPUT_BACKLOG)
        self._input_closed = False

    def options(self, base: ExecOptions) -> ExecOptions:
        """`base` (env, cwd, first stdin) with this command's output, input and signals."""
        return ExecOptions(
            env=base.env,
            cwd=base.cwd,
            stdin=base.stdin,
            output=self.take,
            input=self._input_out,
            signals=self._signals_out,
            background=True,
        )

    def take(self, stream: str, data: bytes) -> None:
        self.pieces.append((stream, data))
        self._wake()

    def finish(self, result: ExecResult | None, error: Exception | None) -> None:
        self.result, self.error = result, error
        self._input.close()
        self._signals.close()
        self.done.set()
        self._wake()

    @property
    def ended(self) -> bool:
        return self.done.is_set()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def changed(self, seen: int) -> None:
        """Return once there are more than `seen` pieces, or the command has ended."""
        while len(self.pieces) <= seen and not self.done.is_set():
            await self._changed.wait()

    def write(self, data: bytes, *, close: bool = False) -> None:
        """Queue `data` for the command's stdin; `close` ends it (EOF) after that.

        Raises:
            ConflictError: the command has ended, its stdin is closed, or it is not reading.
        """
        if self.done.is_set():
            raise ConflictError(f"command {self.id} has ended")
        if self._input_closed:
            raise ConflictError(f"command {self.id}'s stdin is closed")
        if data:
            try:
                self._input.send_nowait(data)
            except trio.WouldBlock:
                raise ConflictError(
                    f"command {self.id} is not reading its stdin ({INPUT_BACKLOG} writes "
                    "waiting); retry later"
                ) from None
        if close:
            self._input_closed = True
            self._input.close()

    def signal(self, sig: int) -> None:
        """Send `sig` to the command's process group.

        Raises:
            ConflictError: the command has ended.
        """
        if self.done.is_set():
            raise ConflictError(f"command {self.id} has ended")
        try:
            self._signals.send_nowait(sig)
        except trio.WouldBlock:
            raise ConflictError(f"command {self.id} has signals waiting; retry later") from None

    def output(self, stream: str) -> str:
        return b"".join(d for s, d in self.pieces if s == stream).decode(errors="replace")

    def to_json(self) -> dict[str, Any]:
        result = self.result.to_json() if self.result is not None else {}
        state = (
            "running" if not self.done.is_set() else "exited" if self.error is None else "failed"
        )
        return {
            "command_id": self.id,
            **self.what,
            "state": state,
            "started_at": round(self.started_at, 3),
            "exit_code": result.get("exit_code"),
            "duration_s": result.get("duration_s"),
            "timed_out": result.get("timed_out", False),
            "truncated": result.get("truncated", False),
            "error": None if self.error is None else str(self.error),
        }


class Commands:
    """A session's background commands, by id."""

    def __init__(self) -> None:
        self._commands: dict[str, Command] = {}

    def add(self, what: dict[str, Any]) -> Command:
        """A new command (not started).

        Raises:
            ConflictError: the session already has `MAX_COMMANDS`.
        """
        if len(self._commands) >= MAX_COMMANDS:
            raise ConflictError(
                f"the session already ran {MAX_COMMANDS} background commands; "
                "acquire a new session for more"
            )
        command = Command(f"cmd-{len(self._commands) + 1}", what)
        self._commands[command.id] = command
        return command

    def get(self, ident: str) -> Command:
        try:
            return self._commands[ident]
        except KeyError:
            raise CommandNotFoundError(f"no background command {ident[:64]!r}") from None

    def all(self) -> list[Command]:
        return list(self._commands.values())

    def __len__(self) -> int:
        return len(self._commands)
