"""The HTTP edge: how many connections a listener takes, how long a request head may
take to arrive, and how big a body may be, before any route runs.

hypercorn parses HTTP; we own the accept loop instead of `hypercorn.trio.serve` so that
each listener (the unix socket, TCP) has its own cap on open connections: past it, a
connection gets a canned 503 and is closed, at the cost of one accept and one write, so
a flood never reaches the routes or slows supervision. Long-lived streams (events, log
follow, streaming exec, an MCP session's GET stream) take a slot of their own under a
smaller cap, so they can never hold every connection: the rest is a reserve for short requests, which
is what keeps the CLI working over the control socket under any number of watchers.

A request head must be complete within `header_timeout` of its first byte (or of the
connection's opening); a client trickling bytes (slowloris) is cut off then. hypercorn
has no such timer: its keep-alive timer covers idle connections, and its `read_timeout`
would also cut a quiet client out of a long stream. We get it by reading the
connection's bytes ourselves in a small subclass of hypercorn's trio `TCPServer` (an
internal class: the version is pinned in pyproject.toml, and tests/integration/
test_api_abuse.py fails if its behaviour changes).

Answers on TCP are gzipped when the client accepts it and they are over `GZIP_MIN`
bytes (the console's modules, the resource list at scale). Starlette's middleware
flushes every chunk of a streamed answer (Z_SYNC_FLUSH), so a followed log stays live
(tests/integration/test_console_routes.py); event streams, NDJSON frames and file
transfers are left as they are. The unix socket compresses nothing: no wire to save.

Bodies: a declared `Content-Length` over the route's limit is refused before the route
runs; a chunked body is counted as it streams. Either way the rest of the body is read and
dropped first (up to `DRAIN_BYTES` / `DRAIN_SECONDS`), then the 413 is sent: most HTTP
clients read nothing until their request is written, so answering early meets a reset.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import structlog
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.events import Closed, RawData, Updated
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app
from starlette.middleware.gzip import DEFAULT_EXCLUDED_CONTENT_TYPES, GZipMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from supervisor.api.errors import ApiError, error_response

log = structlog.get_logger("supervisor.api")

DRAIN_BYTES = 64 << 20
DRAIN_SECONDS = 5.0
REJECT_LINGER = 0.25  # a refused client gets this long to read its 503 before the close
MAX_REJECTING = 256  # refusals lingering at once; beyond, a plain close


@dataclass(frozen=True, slots=True)
class Limits:
    """One listener's limits."""

    connections: int = 512
    streams: int = 128  # long-lived streams, within `connections`
    header_timeout: float = 10.0
    keep_alive: float = 75.0
    graceful_timeout: float = 5.0


@dataclass(slots=True)
class StreamSlots:
    """Counts a listener's long-lived streams; `take()` refuses past the cap."""

    limit: int
    open: int = 0

    def take(self) -> Callable[[], None]:
        """Claim a slot (503 if none is free); returns the function that gives it back."""
        if self.open >= self.limit:
            raise ApiError(
                503,
                "too_many_streams",
                f"this listener already serves {self.limit} streams; retry later",
                retryable=True,
                headers={"retry-after": "5"},
            )
        self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.open -= 1

        return release


def _canned(status: str, code: str, message: str, retry_after: int | None = None) -> bytes:
    """A whole HTTP/1.1 answer with the API's error shape, for use outside any route."""
    body = json.dumps(
        {"error": {"code": code, "message": message, "retryable": retry_after is not None}}
    ).encode()
    retry = f"retry-after: {retry_after}\r\n" if retry_after is not None else ""
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{retry}"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


REJECT = _canned(
    "503 Service Unavailable",
    "too_many_connections",
    "too many open connections; retry later",
    retry_after=1,
)
HEAD_TIMEOUT = _canned(
    "408 Request Timeout", "request_timeout", "the request head did not arrive in time"
)
PLAIN_ON_TLS = _canned(
    "400 Bad Request", "tls_required", "this port speaks TLS: use an https:// URL"
)
TLS_HANDSHAKE = 0x16  # the first byte of a TLS record carrying a ClientHello


class _Http11Only(H11Protocol):
    """HTTP/1.1 and nothing else: no h2c upgrade, no prior-knowledge HTTP/2 (its
    connections would escape the request-head deadline; the API has no use for them)."""

    async def _check_protocol(self, event: Any) -> None:
        return None

    async def _send_error_response(self, status_code: int) -> None:
        # A request h11 cannot parse (bad framing, a huge head, an unknown transfer-coding,
        # which h11 answers 501): the request is at fault, so a 4xx, in the API's shape.
        status = status_code if status_code < 500 else 400
        body = json.dumps(
            {
                "error": {
                    "code": "bad_request" if status == 400 else "request_rejected",
                    "message": f"malformed HTTP request ({status_code} from the parser)",
                    "retryable": False,
                }
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await self._send_h11_event(h11.Response(status_code=status, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())


class _Connection(TCPServer):
    """hypercorn's connection handler with a deadline on every request head."""

    def __init__(self, *args: Any, header_timeout: float, deadline: float) -> None:
        super().__init__(*args)
        self._header_timeout = header_timeout
        self._idle = True
        # A new connection must send its first request head (after its TLS handshake,
        # under the same deadline) within the timeout too.
        self._head_deadline = deadline

    async def protocol_send(self, event: Any) -> None:
        if isinstance(event, Updated):
            # idle=False: a request head is complete; idle=True: waiting for the next one,
            # under the keep-alive timer until its first byte arrives.
            self._idle = event.idle
            self._head_deadline = math.inf
        # hypercorn half-closes the stream (send_eof) outside its send lock: a reply written
        # at that moment (an error answer to a client that hung up mid-body) meets it. The
        # connection is closing either way.
        with contextlib.suppress(trio.BusyResourceError):
            await super().protocol_send(event)

    async def _read_data(self) -> None:
        if type(self.protocol.protocol) is H11Protocol:
            self.protocol.protocol.__class__ = _Http11Only  # built by hypercorn's run()
        while True:
            try:
                with trio.fail_at(self._head_deadline):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                break
            except trio.TooSlowError:
                await self._head_timed_out()
                break
            if self._idle and data and self._head_deadline == math.inf:
                self._head_deadline = trio.current_time() + self._header_timeout
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        # The client is gone (or too slow): nothing is idle any more. hypercorn's keep-alive
        # timer would otherwise hold the connection, and its slot under the cap, for 75 s.
        await self.idle_task.stop()
        await self.protocol.handle(Closed())

    async def _head_timed_out(self) -> None:
        # hypercorn's keep-alive timer would hold the connection open until it fires.
        await self.idle_task.stop()
        with (
            trio.move_on_after(1.0),
            contextlib.suppress(
                trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError
            ),
        ):
            async with self.send_lock:
                await self.stream.send_all(HEAD_TIMEOUT)


@dataclass
class Listener:
    """A bound socket and what it allows; `serve` runs it until `closing` is set."""

    sock: socket.socket
    app: ASGIApp
    limits: Limits
    name: str
    tls: ssl.SSLContext | None = None
    active: int = 0
    rejected: int = 0
    _rejecting: int = field(default=0, repr=False)

    async def serve(
        self, closing: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        config = HypercornConfig()
        config.keep_alive_timeout = self.limits.keep_alive
        config.graceful_timeout = self.limits.graceful_timeout
        config.accesslog = None
        config.errorlog = None
        context = WorkerContext(None)
        wrapped = wrap_app(self.app, config.wsgi_max_body_size, "asgi")  # type: ignore[arg-type]
        self.sock.listen(config.backlog)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.sock))
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptor:
                acceptor.start_soon(self._accept, listener, connections, wrapped, config, context)
                task_status.started()
                await closing.wait()
                acceptor.cancel_scope.cancel()
            await listener.aclose()
            await context.terminated.set()  # idle keep-alive connections close now
            connections.cancel_scope.deadline = trio.current_time() + self.limits.graceful_timeout

    async def _accept(
        self,
        listener: trio.SocketListener,
        connections: trio.Nursery,
        app: Any,
        config: HypercornConfig,
        context: WorkerContext,
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # EMFILE and friends: wait for a descriptor to free up
                log.warning("api_accept_failed", listener=self.name, error=exc.strerror)
                await trio.sleep(0.1)
                continue
            if self.active >= self.limits.connections:
                self.rejected += 1
                if self._rejecting < MAX_REJECTING:
                    self._rejecting += 1
                    connections.start_soon(self._reject, stream)
                else:
                    await _abort(stream)
                continue
            self.active += 1
            connections.start_soon(self._run, app, config, context, stream)

    async def _run(
        self, app: Any, config: HypercornConfig, context: WorkerContext, stream: trio.SocketStream
    ) -> None:
        deadline = trio.current_time() + self.limits.header_timeout
        try:
            served: trio.abc.Stream = stream
            if self.tls is not None:
                secured = await self._handshake(stream, self.tls, deadline)
                if secured is None:
                    return  # the finally frees the slot, the abort closes the socket
                served = secured
            await _Connection(
                app, config, context, ConnectionState({}), served,
                header_timeout=self.limits.header_timeout, deadline=deadline,
            ).run()  # fmt: skip
        except Exception as exc:
            # Whatever one connection does, it ends only that connection: never the
            # listener, and so never the daemon.
            log.warning("api_connection_failed", listener=self.name, error=type(exc).__name__)
            await _abort(stream)
        finally:
            self.active -= 1
            if self.tls is not None:
                await _abort(stream)  # the TLS stream may have left it open

    async def _handshake(
        self, stream: trio.SocketStream, context: ssl.SSLContext, deadline: float
    ) -> trio.SSLStream[trio.SocketStream] | None:
        """The TLS stream, once its handshake is done by `deadline`; None (quietly) if not."""
        with trio.move_on_at(deadline):
            try:
                first = await stream.socket.recv(1, socket.MSG_PEEK)
            except OSError:
                return None
            if not first:
                return None
            if first[0] != TLS_HANDSHAKE:
                # Plain HTTP, most likely: say so in plain HTTP rather than hang up.
                await self._refuse(stream, PLAIN_ON_TLS)
                return None
            # https_compatible: no waiting for the client's close_notify at the end.
            secured = trio.SSLStream(stream, context, server_side=True, https_compatible=True)
            try:
                await secured.do_handshake()
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                reason = exc.__cause__ if exc.__cause__ is not None else exc
                log.debug("api_tls_handshake_failed", listener=self.name, error=str(reason)[:200])
                return None
            return secured
        log.debug("api_tls_handshake_timeout", listener=self.name)
        return None

    async def _refuse(self, stream: trio.SocketStream, answer: bytes) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await stream.send_all(answer)
            await stream.send_eof()
            with trio.move_on_after(REJECT_LINGER):
                while await stream.receive_some(MAX_RECV):
                    pass

    async def _reject(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(REJECT_LINGER):
                await stream.send_all(REJECT)  # a fresh socket's buffer: this does not block
                await stream.send_eof()
                # Read what the client sent: closing with unread data would reset the
                # connection and could destroy the answer before the client reads it.
                while await stream.receive_some(MAX_RECV):
                    pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            self._rejecting -= 1
            await _abort(stream)


async def _abort(stream: trio.SocketStream) -> None:
    with trio.CancelScope(shield=True):
        await stream.aclose()


class BodyLimit:
    """ASGI middleware: 413 for bodies over the route's limit, then drain what is left."""

    def __init__(
        self, app: ASGIApp, limit_for: Callable[[Scope], int], body_idle: float = 10.0
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.body_idle = body_idle  # a body that stalls this long is given up (408)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            text = declared.decode("latin-1").strip()
            if not text.isdigit() or len(text) > 19:
                response = error_response(400, "bad_request", "Content-Length is not a byte count")
                await response(scope, receive, _closing(send))
                return
            if int(text) > limit:
                # Drain first: a client still sending reads no answer before it is done
                # (most HTTP clients only read once the request is written).
                await _drain(receive, int(text))
                await _too_large(limit)(scope, receive, _closing(send))
                return
        seen = 0
        over = False
        body_done = False

        async def counted() -> Message:
            nonlocal seen, over, body_done
            if body_done:  # after the body, receive only waits for the disconnect
                return await receive()
            with trio.move_on_after(self.body_idle) as waited:
                message = await receive()
            if waited.cancelled_caught:
                raise ApiError(
                    408, "request_timeout", f"no byte of the body arrived for {self.body_idle:g}s",
                    headers={"connection": "close"},
                )  # fmt: skip
            body_done = not message.get("more_body", False)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not over:
                    over = True
                    if message.get("more_body", False):
                        await _drain(receive, DRAIN_BYTES)
                    raise ApiError(
                        413, "body_too_large", f"the body is over {limit} bytes",
                        headers={"connection": "close"},
                    )  # fmt: skip
            return message

        await self.app(scope, counted, send)


GZIP_MIN = 1400  # bytes: below about one packet, compressing saves nothing
GZIP_SKIPPED = (
    *DEFAULT_EXCLUDED_CONTENT_TYPES,
    "application/x-ndjson",  # exec frames: small, and latency matters
    "application/x-tar",  # file transfers: big, often already compressed
    "application/octet-stream",
)


def compressed(app: ASGIApp) -> ASGIApp:
    """`app` with its answers gzipped for clients that accept it (see the module doc)."""
    return GZipMiddleware(app, GZIP_MIN, compresslevel=6, exclude_content_types=GZIP_SKIPPED)


def _too_large(limit: int) -> Any:
    return error_response(
        413, "body_too_large", f"the body is over {limit} bytes", headers={"connection": "close"}
    )


def _closing(send: Send) -> Send:
    """`send`, with `connection: close` added to the response head."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
            message = {**message, "headers": [*headers, (b"connection", b"close")]}
        await send(message)

    return wrapped


async def _drain(receive: Receive, declared: int) -> None:
    """Read and drop the rest of a refused body (bounded), so the client sees the answer."""
    if declared > DRAIN_BYTES:
        return  # not worth it: the connection closes with the body unread
    taken = 0
    with trio.move_on_after(DRAIN_SECONDS):
        while taken <= DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            taken += len(message.get("body", b""))
            if not message.get("more_body", False):
                return
