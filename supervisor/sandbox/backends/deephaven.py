"""`backend = "deephaven"`: a sandbox is one launched Deephaven server, used through scripts.

Why it is built this way:
- A sandbox is launched as a `deephaven` resource's server is, by the same code
  (`launchers.deephaven.launch`): a local server (`launch = "python"`) or a container
  (`launch = "docker"`), PSK auth with a key generated per sandbox and handed over the
  launcher's way (never in argv, an environment or a container's config), our
  pydeephaven helper process, start-up bounded by `start_timeout`. Nothing here talks to
  pydeephaven or Docker directly.
- Its language is Python run in the server. `exec` has no meaning there: it answers
  exit 127 with a message, as a missing command does elsewhere, and never runs argv.
- A script returns what it printed, up to `output_limit` bytes a stream, and an
  exception in it is exit 1 with its traceback (`launchers.deephaven.script_capture`):
  a user error, never a broken sandbox. Only a failure of the server or our session is.
- Between sessions the server's Python scope is wiped back to a baseline, so the next
  session sees no leftover variables. That is `ScopeResetFeature`, appended last to the
  environment's features: its `setup` marks the baseline after every other feature's
  setup (so their globals stay), its `teardown_session` resets after every other
  feature's teardown. A failed reset is a state error: the sandbox is not reused.
- A script that overruns its timeout keeps running in the server, and our helper is
  killed mid-call. The session carries on (a new helper connects on the next call) but
  the sandbox is tainted: its reset fails, so it is replaced rather than handed out.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog
import trio

from supervisor.config.deephaven import DeephavenConfig
from supervisor.config.environment import DeephavenSandboxConfig
from supervisor.config.types import MIB
from supervisor.errors import (
    DeephavenClientError,
    ExecRefusedError,
    HelperGoneError,
    MisconfiguredError,
    SandboxStateError,
    StartError,
    UnsupportedError,
)
from supervisor.launchers.deephaven.client import DeephavenClient, ScriptOutput
from supervisor.launchers.deephaven.launch import DeephavenHandle, DeephavenLauncher
from supervisor.launchers.deephaven.server import generate_psk, pick_free_port
from supervisor.launchers.docker import DockerEngine
from supervisor.launchers.local import LocalLauncher
from supervisor.sandbox.backends import ExecResult
from supervisor.sandbox.backends.docker import SandboxConfigError, classify
from supervisor.sandbox.features import Feature
from supervisor.sandbox.instance import PLAIN, ExecOptions
from supervisor.supervision.states import Liveness

if TYPE_CHECKING:
    from supervisor.sandbox.files import Download, Listing
    from supervisor.sandbox.sandbox import Sandbox
    from supervisor.sandbox.session import Session

# gRPC statuses that mean the server or our session is gone, not that the script failed.
_BROKEN = frozenset(
    {"UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED", "UNAUTHENTICATED", "PERMISSION_DENIED"}
)
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
NO_OPTIONS = (
    "a deephaven sandbox runs scripts in its server's Python session: it has no working "
    "directory, standard input or environment per exec; leave out cwd, stdin and env"
)
USE_SCRIPT = "a deephaven sandbox runs Python in its server: send a script, not a command\n"

log = structlog.get_logger("supervisor.sandbox.deephaven")


def refuse_shaped(options: ExecOptions) -> None:
    """Raise ExecRefusedError for options a Deephaven server cannot honour."""
    if options.shaped:
        raise ExecRefusedError(NO_OPTIONS)


class ConsoleInstance:
    """What every sandbox that runs scripts in a Deephaven console does alike: `exec` is a
    missing command, there are no files, and a script runs through `run_console_script`.

    A subclass names itself (`what`, `backing`) for its messages.
    """

    what = "deephaven sandbox"
    backing = "a server"
    name: str

    async def exec(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        options: ExecOptions = PLAIN,
    ) -> ExecResult:
        refuse_shaped(options)
        return ExecResult(127, "", USE_SCRIPT, 0.0)

    async def put(self, source: Path, dest: str) -> None:
        raise SandboxConfigError(
            f"{_article(self.what)} has no file system to copy into (use a script)"
        )

    async def upload(self, dest: str, data: IO[bytes], *, tar: bool, limit: int) -> None:
        raise self._no_files()

    async def download(self, path: str, limit: int) -> Download:
        raise self._no_files()

    async def listdir(self, path: str) -> Listing:
        raise self._no_files()

    def _no_files(self) -> UnsupportedError:
        return UnsupportedError(
            f"{_article(self.what)} has no files to put, get or list: its backend is "
            f"{self.backing}, not a file system (use a script to read or write data)"
        )

    def broken(self, why: object) -> SandboxStateError:
        """The sandbox cannot serve any more (its server, worker or session is gone)."""
        return SandboxStateError(f"{self.what} {self.name}: {why}")


async def run_console_script(
    instance: ConsoleInstance,
    client_for: Callable[[], Awaitable[DeephavenClient]],
    script: str,
    *,
    timeout: float,
    output_limit: int,
    server_gone: Callable[[], bool] = lambda: False,
) -> ExecResult:
    """Run Python in the console of `client_for()`'s session: its exit code (0, or 1 on
    an exception), its output (all at the end: a streamed exec gets it in one piece).

    An overrun is a timed-out result (the caller decides what it costs the sandbox); a
    failure of the helper, the session or the server (`server_gone`) is the sandbox's.

    Raises:
        SandboxStateError: the sandbox is broken (see above).
    """
    started = trio.current_time()
    error: DeephavenClientError | None = None
    output = ScriptOutput(0)
    client: DeephavenClient | None = None
    with trio.move_on_after(timeout) as deadline:
        client = await client_for()
        try:
            # Our deadline comes first; the helper is killed when it cancels the call.
            output = await client.run_captured(script, timeout + 1.0, output_limit)
        except DeephavenClientError as exc:
            error = exc
    duration = trio.current_time() - started
    if deadline.cancelled_caught:
        message = f"the script did not finish within {timeout:g}s and was abandoned\n"
        return ExecResult(None, "", message, duration, timed_out=True)
    if error is None:
        return ExecResult(
            output.exit_code, output.stdout, output.stderr, duration, truncated=output.truncated
        )
    assert client is not None
    if (
        isinstance(error, HelperGoneError)
        or error.code in _BROKEN
        or not client.alive
        or server_gone()
    ):
        raise instance.broken(error) from error
    # The console refused the program itself (an exception we could not catch).
    return ExecResult(1, "", script_error(str(error)), duration)


class DeephavenInstance(ConsoleInstance):
    """One deephaven sandbox: a launched server and the session our helper holds on it."""

    def __init__(
        self, backend: DeephavenBackend, deephaven: DeephavenLauncher, handle: DeephavenHandle
    ) -> None:
        self._backend = backend
        self._deephaven = deephaven
        self.name = deephaven.name
        self.handle = handle
        self.tainted: str | None = None  # why the scope can no longer be trusted
        self._stopping = False

    async def run_script(
        self, script: str, *, timeout: float, options: ExecOptions = PLAIN
    ) -> ExecResult:
        """Run Python in the server (see `run_console_script`)."""
        refuse_shaped(options)

        async def client() -> DeephavenClient:
            await self._reconnect_if_needed()
            return self.handle.client

        result = await run_console_script(
            self,
            client,
            script,
            timeout=timeout,
            output_limit=self._backend.output_limit,
            server_gone=lambda: self.handle.server_exited,
        )
        if result.timed_out:
            self.tainted = f"a script overran its {timeout:g}s timeout"
        return result

    async def _reconnect_if_needed(self) -> None:
        """After a timeout killed our helper, open a new one (and a new session)."""
        if self.handle.client.alive:
            return
        if self.handle.server_exited:
            raise self.broken("server exited")
        self.tainted = self.tainted or "the client helper was replaced"
        result = await self._deephaven.check(self._backend.server_config, self.handle)
        if result.liveness is not Liveness.ONLINE:
            raise self.broken(result.detail)

    async def check(self) -> None:
        """A real RPC (unless a script is running); a dead helper is reopened."""
        before = self.handle.client
        result = await self._deephaven.check(self._backend.server_config, self.handle)
        if self.handle.client is not before:
            self.tainted = self.tainted or "the client helper was replaced"
        if result.liveness is not Liveness.ONLINE:
            raise SandboxStateError(
                f"deephaven sandbox {self.name} is {result.liveness}: {result.detail}"
            )

    async def wait_dead(self) -> str:
        term = await self.handle.wait()
        if self._stopping:
            await trio.sleep_forever()  # our own stop is no death
        return f"server {term.detail}"

    async def stop(self) -> None:
        if self._stopping and self.handle.stopped:
            return
        self._stopping = True
        await self.handle.stop(self._backend.stop_timeout)

    def connection(self) -> dict[str, Any]:
        credentials = self.handle.credentials()
        if credentials is None:
            raise SandboxStateError(f"deephaven sandbox {self.name} is not running")
        return credentials.to_json()

    async def mark_baseline(self) -> None:
        """Remember the scope's current names as the ones `reset` keeps."""
        try:
            await self.handle.client.mark_baseline(self._backend.reset_timeout)
        except DeephavenClientError as exc:
            raise self.broken(exc) from exc

    async def reset(self) -> None:
        """Delete every global a session left in the scope.

        Raises:
            SandboxStateError: the scope cannot be made clean (tainted, or the reset failed).
        """
        if self.tainted is not None:
            raise SandboxStateError(
                f"deephaven sandbox {self.name} is not reusable: {self.tainted}"
            )
        try:
            await self.handle.client.reset_scope(self._backend.reset_timeout)
        except DeephavenClientError as exc:
            raise self.broken(exc) from exc


class ScopeResetFeature(Feature):
    """Marks the scope's baseline after setup and wipes the scope after every session.

    Append it last to a deephaven environment's features (see the module docstring).
    """

    name = "deephaven_reset"

    async def setup(self, sandbox: Sandbox | None) -> None:
        await _instance(sandbox).mark_baseline()

    async def teardown_session(self, sandbox: Sandbox, session: Session) -> None:
        await _instance(sandbox).reset()


def _instance(sandbox: Sandbox | None) -> DeephavenInstance:
    instance = None if sandbox is None else sandbox.instance
    if not isinstance(instance, DeephavenInstance):
        raise TypeError("deephaven_reset only works in a deephaven sandbox")
    return instance


class DeephavenBackend:
    """Launches one Deephaven server per sandbox, from `config`."""

    name = "deephaven"

    def __init__(
        self,
        launcher: LocalLauncher,
        config: DeephavenSandboxConfig,
        *,
        environment: str,
        docker: DockerEngine | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 10.0,
        reset_timeout: float = 30.0,
        output_limit: int = MIB,
        pick_port: Callable[[str], int] = pick_free_port,
    ) -> None:
        self.launcher = launcher
        self.config = config
        self.environment = environment
        self.docker = docker
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.reset_timeout = reset_timeout
        self.output_limit = output_limit
        self._pick_port = pick_port
        self.server_config = server_config(config, start_timeout)

    async def reset(self) -> None:
        # A killed run's local servers died with its guardian; its containers are
        # removed by the daemon before anything starts.
        return None

    async def create(self, sandbox_id: str) -> DeephavenInstance:
        """Launch a server and open our session on it, within `start_timeout`.

        Raises:
            SandboxStateError: the server did not start or answer in time, or exited.
            SandboxConfigError: the settings cannot work (no Docker engine, missing image).
        """
        name = _UNSAFE_NAME.sub("-", sandbox_id).strip("-.")
        deephaven = DeephavenLauncher(
            name,
            self.launcher,
            docker=self.docker,
            pick_port=self._pick_port,
            # Logged under a `deephaven` resource's keys: log queries find either alike.
            log_context={"resource": name, "deephaven": f"community:config:{name}"},
        )
        what = f"sandbox {sandbox_id}"
        handle: DeephavenHandle | None = None
        try:
            with trio.fail_after(self.start_timeout):
                handle = await deephaven.launch(self.server_config, generate_psk())
                await deephaven.ready(self.server_config, handle)
        except BaseException as exc:
            if handle is not None:
                with trio.CancelScope(shield=True):
                    await handle.stop(self.stop_timeout)
            if isinstance(exc, trio.TooSlowError):
                raise SandboxStateError(
                    f"{what}: the server did not start within {self.start_timeout:g}s"
                ) from exc
            if isinstance(exc, MisconfiguredError):
                raise SandboxConfigError(f"{what}: {exc}") from exc
            if isinstance(exc, StartError) and self.config.launch == "docker":
                raise classify(exc, what) from exc
            if isinstance(exc, StartError | DeephavenClientError):
                raise SandboxStateError(f"{what}: {exc}") from exc
            raise
        log.info("deephaven_sandbox_started", sandbox=sandbox_id, endpoint=handle.endpoint)
        return DeephavenInstance(self, deephaven, handle)


def _article(what: str) -> str:
    return f"an {what}" if what[0] in "aeiou" else f"a {what}"


def script_error(message: str) -> str:
    """A script's failure as the user wants to read it: the Python part, no Java frames."""
    message = message.removeprefix("run_captured: ").removeprefix("run_script: ")
    lines = [line for line in message.splitlines() if not line.startswith("\tat ")]
    return "\n".join(lines).strip() + "\n"


def server_config(config: DeephavenSandboxConfig, start_timeout: float) -> DeephavenConfig:
    """The settings, as a `deephaven` resource's, that launch one sandbox's server."""
    fields: dict[str, Any] = {
        "kind": "deephaven",
        "launch": config.launch,
        "port": "auto",
        "auth": "psk",
        "heap": config.heap,
        "jvm_args": config.jvm_args,
        "start_timeout": start_timeout,
    }
    if config.launch == "python" and config.python_venv is not None:
        fields["python_venv"] = config.python_venv
    if config.launch == "docker" and config.image is not None:
        fields["image"] = config.image
    return DeephavenConfig.model_validate(fields)
