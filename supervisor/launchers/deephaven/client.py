"""The daemon's side of the Deephaven client helper: a proxy with deadlines.

pydeephaven never runs in the daemon. Each resource talks to its own helper process
(`worker.py` beside this module) over a private unix socket, one JSON line per request.
Every call has a deadline; a call that does not answer in time, or is cancelled while in
flight, kills the helper, because a helper with a request outstanding is in an unknown
state (blocked in gRPC, or about to answer the wrong caller). The helper is spawned by
the `LocalLauncher`, so it dies with the daemon, even on SIGKILL.

Calls are serialised (one in flight); errors are mapped to liveness in one place,
`classify`, by the gRPC status the helper found on the exception chain. A script whose
output is wanted runs inside `script_capture` (see there), sent with it as one program.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import structlog
import trio

from supervisor.errors import (
    DeephavenClientError,
    HelperGoneError,
    MisconfiguredError,
    StartError,
    UnauthorizedError,
)
from supervisor.launchers.deephaven import script_capture
from supervisor.launchers.deephaven.server import accept_from
from supervisor.launchers.local import LocalLauncher, ProcessHandle, scrubbed_environment
from supervisor.supervision.policy import Termination
from supervisor.supervision.resource import CheckResult
from supervisor.supervision.states import Liveness

log = structlog.get_logger("supervisor.deephaven")

HELPER_START_TIMEOUT = 10.0
# Found, not imported: the daemon itself must never load pydeephaven.
_WORKER_SPEC = importlib.util.find_spec("supervisor.launchers.deephaven.worker")
assert _WORKER_SPEC is not None
assert _WORKER_SPEC.origin is not None
WORKER = _WORKER_SPEC.origin
_CLOSE_GRACE = 2.0

# gRPC status names -> liveness. Anything absent is UNKNOWN.
_LIVENESS_BY_CODE = {
    "UNAVAILABLE": Liveness.OFFLINE,
    "DEADLINE_EXCEEDED": Liveness.OFFLINE,
    "CANCELLED": Liveness.OFFLINE,
    "UNAUTHENTICATED": Liveness.UNAUTHORIZED,
    "PERMISSION_DENIED": Liveness.UNAUTHORIZED,
    "INVALID_ARGUMENT": Liveness.MISCONFIGURED,
    "UNIMPLEMENTED": Liveness.MISCONFIGURED,  # something that is not Deephaven answers
}

# Wipes user state from a Python console scope; names present at connect time stay, and
# so do dunder names, but for the last script's output.
RESET_SCOPE_SCRIPT = f"""\
globals().pop({script_capture.RESULT!r}, None)
_keep = globals().get("__supervisor_baseline__")
for _name in [n for n in list(globals()) if not n.startswith("__")]:
    if _keep is None or _name not in _keep:
        del globals()[_name]
"""
BASELINE_SCRIPT = "__supervisor_baseline__ = frozenset(globals()) | {'_keep', '_name'}"


# Failure types the helpers classify themselves (no gRPC status to go by).
_LIVENESS_BY_TYPE = {
    "settings": Liveness.MISCONFIGURED,
    "unauthorized": Liveness.UNAUTHORIZED,
    "offline": Liveness.OFFLINE,
}


def classify(code: str | None, type_: str = "") -> Liveness:
    """The liveness a failed call implies (see the tables above)."""
    if type_ in _LIVENESS_BY_TYPE:
        return _LIVENESS_BY_TYPE[type_]
    if code is None:
        return Liveness.UNKNOWN
    return _LIVENESS_BY_CODE.get(code, Liveness.UNKNOWN)


def liveness_of(exc: DeephavenClientError) -> Liveness:
    return classify(exc.code, exc.type)


def describe(exc: DeephavenClientError) -> str:
    """`LIVENESS [CODE]: message`, the detail shown in status and events."""
    code = f" [{exc.code}]" if exc.code else ""
    return f"{liveness_of(exc).value}{code}: {exc}"


def lost_session_result(exc: DeephavenClientError) -> CheckResult:
    """The check result of an established session whose liveness call failed."""
    liveness = liveness_of(exc)
    if liveness is Liveness.UNAUTHORIZED:
        # A session whose token the server no longer knows: it expired or the server
        # restarted. A new session (a restart) tells whether the credentials still work.
        return CheckResult(Liveness.UNKNOWN, f"session no longer valid: {describe(exc)}")
    return CheckResult(liveness, describe(exc))


def start_error(exc: DeephavenClientError) -> StartError:
    """What a failed start becomes: UNAUTHORIZED and MISCONFIGURED are not retried fast."""
    liveness = liveness_of(exc)
    if liveness is Liveness.UNAUTHORIZED:
        return UnauthorizedError(describe(exc))
    if liveness is Liveness.MISCONFIGURED:
        return MisconfiguredError(describe(exc))
    return StartError(describe(exc))


# The program `script_capture` is, sent as text to run in the server (never imported there).
CAPTURE_SOURCE = Path(script_capture.__file__).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class ScriptOutput:
    """What a script run in the server did: exit code, output, whether output was cut."""

    exit_code: int
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False

    @classmethod
    def from_json(cls, data: object) -> ScriptOutput:
        """The helper's answer (None: a silent success).

        Raises:
            DeephavenClientError: the answer is not what the program sends.
        """
        if data is None:
            return cls(0)
        malformed = DeephavenClientError("run_captured: malformed result")
        if not isinstance(data, dict):
            raise malformed
        try:
            output = cls(
                int(data["exit_code"]),
                str(data["stdout"]),
                str(data["stderr"]),
                bool(data["truncated"]),
            )
        except (KeyError, TypeError, ValueError):
            raise malformed from None
        return output


def capture_program(script: str, output_limit: int) -> str:
    """The console program that runs `script` with `script_capture` (see there)."""
    source = f"{CAPTURE_SOURCE}\nmain(__script__, {int(output_limit)}, __console__)\n"
    namespace = (
        f"{{'__name__': 'supervisor_capture', '__script__': {script!r}, '__console__': globals()}}"
    )
    return f"exec({source!r}, {namespace})\n"


@dataclass(frozen=True, slots=True)
class ConnectSpec:
    """Where and how to open a session; `token` never appears in a repr."""

    host: str
    port: int
    auth_type: str
    token: str = field(default="", repr=False)
    use_tls: bool = False
    tls_root_certs: Path | None = None
    client_cert_chain: Path | None = None
    client_private_key: Path | None = None
    session_type: str = "python"

    def request(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "auth_type": self.auth_type,
            "auth_token": self.token,
            "use_tls": self.use_tls,
            "tls_root_certs": _opt(self.tls_root_certs),
            "client_cert_chain": _opt(self.client_cert_chain),
            "client_private_key": _opt(self.client_private_key),
            "session_type": self.session_type,
        }


class DeephavenClient:
    """One helper process and the session it holds; open it with `open_client()`."""

    def __init__(self, process: ProcessHandle, stream: trio.SocketStream) -> None:
        self.process = process
        self._stream = stream
        self._buffer = b""
        self._lock = trio.Lock()
        self._next_id = 0
        self.connected = False
        self.killed = False  # ended on purpose (a stop, or a call that did not answer)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return not self.process.exited.is_set() and not self.killed

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    async def connect(self, spec: ConnectSpec, timeout: float) -> None:
        """Open a session (closing any previous one)."""
        self.connected = False
        await self.call("connect", timeout, **spec.request())
        self.connected = True

    async def ping(self, timeout: float) -> float:
        """One real round trip with a gRPC deadline; returns its duration in seconds."""
        started = trio.current_time()
        # The gRPC deadline is a little shorter than ours, so a slow server gets a clean
        # DEADLINE_EXCEEDED and the helper survives it.
        await self.call("ping", timeout, rpc_timeout=max(timeout * 0.8, timeout - 1.0))
        return trio.current_time() - started

    async def probe(self, spec: ConnectSpec, timeout: float) -> None:
        """One authenticated call with `spec`'s credentials, on a connection of its own:
        no session is kept (the helper's own, if any, is left alone)."""
        rpc_timeout = max(timeout * 0.8, timeout - 1.0)
        await self.call("probe", timeout, rpc_timeout=rpc_timeout, **spec.request())

    async def run_script(self, script: str, timeout: float) -> None:
        """Run `script` in the session's console; the helper is killed if it overruns."""
        await self.call("run_script", timeout, script=script)

    async def run_captured(self, script: str, timeout: float, output_limit: int) -> ScriptOutput:
        """Run `script` with its output captured (at most `output_limit` bytes a stream).

        An exception in the script is exit 1 with its traceback, not an error.
        """
        program = capture_program(script, output_limit)
        result = await self.call(
            "run_captured", timeout, program=program, result=script_capture.RESULT
        )
        return ScriptOutput.from_json(result)

    async def mark_baseline(self, timeout: float) -> None:
        """Remember the console's current names as the ones `reset_scope` keeps."""
        await self.run_script(BASELINE_SCRIPT, timeout)

    async def reset_scope(self, timeout: float) -> None:
        """Delete every user-defined global of the Python console (tables included)."""
        await self.run_script(RESET_SCOPE_SCRIPT, timeout)

    async def debug(self, what: str, timeout: float = 5.0) -> None:
        """Fault injection for tests (`abort`, `use_after_close`, `drop_session`)."""
        await self.call("debug", timeout, what=what)

    async def call(self, op: str, timeout: float, **fields: object) -> object:
        """Send one request and return its result.

        Raises:
            DeephavenClientError: the call failed in the helper.
            HelperGoneError: the helper is dead, or was killed for not answering.
        """
        async with self._lock:
            if not self.alive:
                raise HelperGoneError(f"client helper is gone ({self._end()})")
            self._next_id += 1
            request = {"id": self._next_id, "op": op, **fields}
            answered = False
            try:
                with trio.move_on_after(timeout):
                    await self._stream.send_all(json.dumps(request).encode() + b"\n")
                    line = await self._read_line()
                    answered = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                line = None
                answered = True
            finally:
                if not answered:  # timed out or cancelled in flight
                    self.kill()
            if not answered:
                raise HelperGoneError(f"{op}: no answer within {timeout:g}s")
            if line is None:
                with trio.move_on_after(1.0):
                    await self.process.exited.wait()
                self._terminate()  # it died by itself: not `killed`, so its handle ends
                raise HelperGoneError(f"client helper died during {op} ({self._end()})")
        response = json.loads(line)
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise DeephavenClientError(
            f"{op}: {error.get('message', 'failed')}",
            code=error.get("code"),
            type_=str(error.get("type", "")),
        )

    async def start_call(self, op: str, timeout: float, **fields: object) -> object:
        """`call` for a start that depends on it: a failure kills the helper (so nothing is
        left behind), and a failed call is the `StartError` that says what to do next.

        Raises:
            StartError: the call failed (`start_error`: MisconfiguredError when hopeless).
        """
        try:
            return await self.call(op, timeout, **fields)
        except DeephavenClientError as exc:
            self.kill()
            raise start_error(exc) from None
        except BaseException:
            self.kill()
            raise

    async def wait_ended(self) -> Termination:
        """How the helper ended, when a handle it holds ends with it; one we killed on
        purpose (a call that hung) never returns: the liveness check reports the lost
        session, and its failure count decides the restart."""
        term = await self.process.wait()
        if self.killed:
            await trio.sleep_forever()
        return Termination(term.reason, f"client helper {term.detail}", term.exit_code, term.signal)

    async def close(self, timeout: float = _CLOSE_GRACE) -> None:
        """Close the session, let the helper exit, kill it if it does not; idempotent."""
        if self.alive and not self.busy:
            with trio.move_on_after(timeout):
                with contextlib.suppress(DeephavenClientError):
                    await self.call("close", timeout)
                await self._stream.aclose()
                await self.process.exited.wait()
        self.kill()

    def kill(self) -> None:
        """End the helper now; its session dies with it."""
        self.killed = True
        self._terminate()

    def _terminate(self) -> None:
        self.connected = False
        if not self.process.exited.is_set():
            self.process.kill()
        self._stream.socket.close()  # sync and idempotent; wakes a blocked reader

    def _end(self) -> str:
        term = self.process.termination
        return "killed" if term is None and self.killed else (term.detail if term else "running")

    async def _read_line(self) -> bytes | None:
        # A script's output makes long lines: collect chunks, join once (no quadratic copy).
        chunks = [self._buffer]
        while b"\n" not in chunks[-1]:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                self._buffer = b"".join(chunks)
                return None
            chunks.append(chunk)
        line, self._buffer = b"".join(chunks).split(b"\n", 1)
        return line


async def open_client(
    launcher: LocalLauncher,
    *,
    on_output: Callable[[str, str], None] | None = None,
    timeout: float = HELPER_START_TIMEOUT,
    worker: str = WORKER,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
) -> DeephavenClient:
    """Start `python -I worker SOCKET` and accept its connection; kill it if that fails.

    `env` defaults to the daemon's (`scrubbed_environment`); secrets never go in it.

    Raises:
        HelperGoneError: the helper exited or did not connect within `timeout`.
    """
    tmpdir = tempfile.mkdtemp(prefix="supervisor-dh-")  # 0700: only we can connect
    path = os.path.join(tmpdir, "client.sock")
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await listener.bind(path)
        listener.listen(1)
        argv = [python, "-I", worker, path]
        env = scrubbed_environment() if env is None else env
        process = await launcher.spawn(argv, env=env, on_output=on_output)
        try:
            try:
                sock = await accept_from(listener, process, timeout)
            except StartError as exc:
                raise HelperGoneError(str(exc)) from None
            if sock is None:
                detail = process.termination.detail if process.termination else "no connection"
                raise HelperGoneError(f"client helper did not start: {detail}")
        except BaseException:
            process.kill()
            raise
    finally:
        listener.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    return DeephavenClient(process, trio.SocketStream(sock))


def _opt(path: Path | None) -> str | None:
    return None if path is None else str(path)
