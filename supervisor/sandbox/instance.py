"""What a sandbox backend provides: bring an isolated place up, run things in it, stop it.

A backend raises `SandboxStateError` when the sandbox itself is broken (the place cannot
be created, the container died, the engine is gone) and anything else for a user error
(a command that cannot be found, bad input). The environment treats the two differently.

These are the protocols the sandboxes consume; the backends (`backends/`) implement
them, so nothing here imports a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from supervisor.sandbox.files import Download, Listing

import trio


@dataclass(frozen=True, slots=True)
class ExecResult:
    """What one command run in a sandbox did."""

    exit_code: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    truncated: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_s": round(self.duration_s, 6),
            "timed_out": self.timed_out,
            "truncated": self.truncated,
        }


OutputSink = Callable[[str, bytes], None]
"""Takes each piece of output as it arrives: ("stdout" or "stderr", bytes within the cap)."""


@dataclass(frozen=True, slots=True)
class ExecOptions:
    """What a client may add to one exec; the API has checked the values already.

    With `output`, the backend hands the output to it as it comes (the result's `stdout`
    and `stderr` are then empty); a backend that cannot stream leaves them in the result.
    """

    env: Mapping[str, str] | None = None
    cwd: str | None = None  # relative to the sandbox's work directory, with no ".."
    stdin: bytes | None = None  # fed to the command, then closed
    output: OutputSink | None = None
    # A background command's: more stdin as it comes (EOF when the channel closes), and
    # signals for its process group.
    input: trio.MemoryReceiveChannel[bytes] | None = None
    signals: trio.MemoryReceiveChannel[int] | None = None
    # A foreground command holds its session's lease while it runs; a background one
    # does not (the client that started it may be gone: its heartbeats say it is not).
    background: bool = False

    @property
    def shaped(self) -> bool:
        """Whether it changes how the command runs (not just where its output goes)."""
        fields = (self.env, self.cwd, self.stdin, self.input, self.signals)
        return any(value is not None for value in fields)


PLAIN = ExecOptions()


class Instance(Protocol):
    """One running sandbox, as its backend sees it."""

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        options: ExecOptions = PLAIN,
    ) -> ExecResult:
        """Run `argv` in the sandbox (never through a shell unless argv asks for one).

        Raises:
            ExecRefusedError: the backend cannot honour an option.
        """

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        """Run a script in the sandbox's own language (sh for process and docker)."""

    async def put(self, source: Path, dest: str) -> None:
        """Copy a local file or directory to `dest` (relative to the sandbox's workdir)."""

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        """Write a client's file as `dest`, or extract its tar under the directory `dest`
        (relative to the workdir, confined to it: `UnsafePathError` otherwise)."""

    async def download(self, path: str, limit: int) -> Download:
        """The file `path`'s bytes, or a tar of the directory `path`, at most `limit` bytes
        (`TransferTooLargeError` otherwise)."""

    async def listdir(self, path: str) -> Listing:
        """The entries of the directory `path`."""

    async def check(self) -> None:
        """Raise SandboxStateError if the sandbox is broken."""

    async def wait_dead(self) -> str:
        """Return (with a reason) when the sandbox dies by itself; may never return.

        Raises:
            SandboxLostError: the place it runs is lost (its session ends as lost).
        """

    async def stop(self) -> None:
        """Stop the sandbox and remove what it left; idempotent."""

    def connection(self) -> dict[str, Any]:
        """What a client needs to use the sandbox directly (workdir, host, port, token)."""


class Backend(Protocol):
    """A kind of sandbox: `process`, `docker` or `deephaven`."""

    name: str

    async def create(self, sandbox_id: str) -> Instance:
        """Bring up one sandbox; if cancelled or failing, leave nothing behind."""

    async def reset(self) -> None:
        """Before the first sandbox: remove what a killed previous run left behind (its
        directories, its servers); backends with nothing to remove do nothing."""
