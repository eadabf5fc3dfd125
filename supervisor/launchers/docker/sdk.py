"""The docker SDK's edges: clients, calls from trio, errors, streams, and SDK quirks.

Everything here knows a quirk of the blocking SDK so that the rest of the package need not:
- The SDK (and `requests` under it) is imported on first use, never at module level:
  `make_clients` loads it, in a worker thread, when the first engine opens. A daemon whose
  config has no docker-using kind never pays for it (tests/integration/test_lazy_imports.py).
- Every request runs in a worker thread through one `CapacityLimiter` per engine, under a
  trio deadline, abandoned on cancel (`EngineClient.call`); a long read is given a
  limiter of its own by its caller (`EngineClient.read_stream`).
- SDK, HTTP, socket and deadline failures become our errors in one context manager
  (`docker_errors`), pinned by tests/unit/launchers/docker/test_sdk.py.
- A streamed response (events, exec output) blocks its reading thread until
  `CancellableStream.close()` shuts the socket down; `StreamSlot` makes sure exactly one
  party closes it, even when the opening thread was abandoned.
- The API version is pinned (1.41: Docker 20.10 and later), so building a client does no
  I/O and an engine that is down at start-up is just "not up yet".
- Feeding an exec's stdin needs the hijacked socket and a half-close (`feed_exec`).
- The SDK's unix-socket connection leaks its socket when connecting fails; while an
  engine is down that is one ResourceWarning per reconnect attempt, so it is replaced
  (`launchers.docker.unix_adapter`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import trio

from supervisor.errors import ResourceError

if TYPE_CHECKING:
    import docker
    import docker.errors

API_VERSION = "1.41"

T = TypeVar("T")


class DockerError(ResourceError):
    """The Docker engine refused or failed a request."""


class ContainerNotFoundError(DockerError):
    """The container does not exist (any more)."""


class EngineUnavailableError(DockerError):
    """The Docker engine did not answer: down, unreachable or too slow."""


@contextlib.contextmanager
def docker_errors(action: str) -> Iterator[None]:
    """Turn docker SDK, HTTP, socket and deadline failures of `action` into DockerError."""
    try:
        yield
    except trio.TooSlowError as exc:
        raise EngineUnavailableError(f"{action}: the Docker engine did not answer in time") from exc
    except Exception as exc:
        error = _mapped(action, exc)
        if error is None:
            raise  # a bug stays a bug
        raise error from exc


def _mapped(action: str, exc: Exception) -> DockerError | None:
    """`exc` as our error, or None when it is not the engine's; the order matters."""
    # Loaded already whenever it matters: an error worth mapping comes from the SDK.
    import docker.errors  # noqa: PLC0415 - the SDK loads on first use (module docstring)
    import requests  # noqa: PLC0415 - loaded with the SDK, which is built on it

    if isinstance(exc, docker.errors.ImageNotFound):
        return DockerError(
            f"{action}: {_explain(exc)} (the daemon never pulls: build, load or pull it first)"
        )
    if isinstance(exc, docker.errors.NotFound):
        return ContainerNotFoundError(f"{action}: {_explain(exc)}")
    if isinstance(exc, docker.errors.APIError):
        return DockerError(f"{action}: {_explain(exc)}")
    # requests' errors are OSErrors too, and an APIError is one of them: checked above.
    if isinstance(exc, requests.ConnectionError | requests.Timeout | OSError):
        return EngineUnavailableError(
            f"{action}: cannot reach the Docker engine ({type(exc).__name__})"
        )
    if isinstance(exc, docker.errors.DockerException | requests.RequestException):
        return DockerError(f"{action}: {exc}")
    return None


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """Client certificate, key and CA for an engine at tcp:// with TLS."""

    cert: str
    key: str
    ca: str | None = None


class StreamSlot:
    """A stream opened in one thread, read in another, closed from the loop: exactly once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream: Any = None
        self._closed = False

    def fill(self, open_stream: Callable[[], Any]) -> None:
        stream = open_stream()
        with self._lock:
            if self._closed:  # the caller gave up waiting: nobody else will close it
                close_stream(stream)
            else:
                self._stream = stream

    def consume(self, consume: Callable[[Any], None]) -> None:
        try:
            consume(self._stream)
        except Exception:
            # Closing under a blocked read surfaces as whatever the SDK trips on.
            if not self._closed:
                raise

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._stream is not None:
                close_stream(self._stream)


async def close_when_cancelled(slot: StreamSlot) -> None:
    try:
        await trio.sleep_forever()
    finally:
        slot.close()


def close_stream(stream: Any) -> None:
    """Close a CancellableStream: shuts its socket down, which ends a blocked read."""
    with contextlib.suppress(Exception):  # already closed, or the response is gone
        stream.close()
    with contextlib.suppress(Exception):
        stream._response.close()  # noqa: SLF001 - the SDK stream has no other way to be cut


class EngineClient:
    """One engine's blocking API client, called from trio."""

    def __init__(self, api: docker.APIClient, *, timeout: float, max_threads: int) -> None:
        self.api = api
        self.timeout = timeout
        self.limiter = trio.CapacityLimiter(max_threads)

    async def call(
        self,
        action: str,
        fn: Callable[..., T],
        *args: Any,
        deadline: float | None = None,
        **kwargs: Any,
    ) -> T:
        """`fn(*args, **kwargs)` in a worker thread, under a deadline, errors mapped."""
        with docker_errors(action), trio.fail_after(deadline or self.timeout):
            return await trio.to_thread.run_sync(
                partial(fn, *args, **kwargs), limiter=self.limiter, abandon_on_cancel=True
            )

    async def read_stream(
        self,
        open_stream: Callable[[], Any],
        consume: Callable[[Any], None],
        action: str,
        limiter: trio.CapacityLimiter,
    ) -> None:
        """Open a CancellableStream and `consume` it in a thread; close it however we leave."""
        slot = StreamSlot()
        try:
            with docker_errors(action), trio.fail_after(self.timeout):
                await trio.to_thread.run_sync(
                    slot.fill, open_stream, limiter=self.limiter, abandon_on_cancel=True
                )
            with docker_errors(action):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(close_when_cancelled, slot)
                    # Not abandoned on cancel: `slot.close()` is what ends the read.
                    await trio.to_thread.run_sync(slot.consume, consume, limiter=limiter)
                    nursery.cancel_scope.cancel()
        finally:
            slot.close()


def force_remove(api: docker.APIClient, ref: str) -> None:
    """Kill and remove `ref`; already gone, or being removed by someone else, is done."""
    import docker.errors  # noqa: PLC0415 - the SDK loads on first use (module docstring)

    try:
        api.remove_container(ref, force=True)
    except docker.errors.NotFound:
        pass
    except docker.errors.APIError as exc:
        if exc.status_code != 409 or "already in progress" not in str(exc.explanation):
            raise


def make_clients(
    base_url: str | None, tls: TLSFiles | None, timeout: float
) -> tuple[docker.APIClient, docker.APIClient]:
    """A client for requests and one for the event stream (no I/O: the version is pinned).

    The first call loads the SDK: call it in a worker thread.
    """
    import docker  # noqa: PLC0415 - the SDK loads on first use (module docstring)
    import docker.tls  # noqa: PLC0415
    import docker.utils  # noqa: PLC0415

    from supervisor.launchers.docker.unix_adapter import fix_unix_adapter  # noqa: PLC0415

    kwargs: dict[str, Any]
    if base_url is None:
        kwargs = docker.utils.kwargs_from_env()  # DOCKER_HOST, DOCKER_TLS_VERIFY, ...
    elif tls is None and base_url.startswith("tcp://") and os.environ.get("DOCKER_CERT_PATH"):
        # As the docker CLI does with -H: the certificates of DOCKER_CERT_PATH, verified
        # when DOCKER_TLS_VERIFY is set.
        kwargs = docker.utils.kwargs_from_env(environment={**os.environ, "DOCKER_HOST": base_url})
    else:
        kwargs = {"base_url": base_url}
        if tls is not None:
            kwargs["tls"] = docker.tls.TLSConfig(
                client_cert=(tls.cert, tls.key), ca_cert=tls.ca, verify=tls.ca is not None
            )
    kwargs.update(version=API_VERSION, timeout=timeout)
    api = fix_unix_adapter(docker.APIClient(**kwargs))
    try:
        return api, fix_unix_adapter(docker.APIClient(**kwargs))
    except BaseException:
        api.close()
        raise


class Capped:
    """Keeps the first `limit` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: list[bytes] = []
        self.size = 0
        self.truncated = False

    def add(self, chunk: bytes | None) -> None:
        if not chunk:
            return
        room = self.limit - self.size
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self.chunks.append(chunk)
        self.size += len(chunk)

    def data(self) -> bytes:
        return b"".join(self.chunks)


def drain(stream: Any, *, out: Capped, err: Capped) -> None:
    # Read to the end even past the limit: a writer blocked on a full pipe never exits.
    for stdout, stderr in stream:
        out.add(stdout)
        err.add(stderr)


def feed_exec(
    api: docker.APIClient, exec_id: str, data: bytes, *, out: Capped, err: Capped
) -> None:
    """Start an exec on a hijacked socket, write `data`, half-close, read to the end.

    The half-close is what the engine turns into EOF on the command's stdin.
    """
    import docker.utils.socket  # noqa: PLC0415 - the SDK loads on first use (module docstring)

    sock = api.exec_start(exec_id, socket=True)
    raw = getattr(sock, "_sock", sock)  # unix: a SocketIO over the socket; https: the socket
    try:
        raw.sendall(data)
        raw.shutdown(socket.SHUT_WR)
        for stream, chunk in docker.utils.socket.frames_iter(sock, tty=False):
            (err if stream == docker.utils.socket.STDERR else out).add(chunk)
    finally:
        sock.close()
        raw.close()


class Attached:
    """An exec's hijacked socket: opened, fed and read in worker threads, cut from the loop.

    Shutting the socket down is what ends a blocked read or write; the reader closes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: Any = None
        self._raw: Any = None
        self._closed = False

    def open(self, api: docker.APIClient, exec_id: str) -> None:
        sock = api.exec_start(exec_id, socket=True)
        raw = getattr(sock, "_sock", sock)  # unix: a SocketIO over the socket; https: itself
        with self._lock:
            self._sock, self._raw = sock, raw
            if self._closed:  # the caller gave up waiting: nobody else will close it
                self._release()

    def write(self, data: bytes, *, end: bool = False) -> None:
        """Write `data` to the command's stdin; `end` half-closes it (the engine's EOF)."""
        with contextlib.suppress(OSError, AttributeError):  # exited, or we were cut off
            self._raw.sendall(data)
            if end:
                self._raw.shutdown(socket.SHUT_WR)

    def read(self, take: Callable[[bool, bytes], None]) -> None:
        """Pass each frame to `take(is_stderr, data)` until the end; then close."""
        import docker.utils.socket  # noqa: PLC0415 - the SDK loads on first use (module docstring)

        try:
            for stream, chunk in docker.utils.socket.frames_iter(self._sock, tty=False):
                take(stream == docker.utils.socket.STDERR, chunk)
        except Exception:
            if not self._closed:  # a shutdown under a blocked read surfaces as anything
                raise
        finally:
            with self._lock:
                self._release()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._raw is not None:
                with contextlib.suppress(OSError):
                    self._raw.shutdown(socket.SHUT_RDWR)

    def _release(self) -> None:
        for part in (self._sock, self._raw):
            with contextlib.suppress(Exception):
                part.close()
        self._sock = self._raw = None
        self._closed = True
