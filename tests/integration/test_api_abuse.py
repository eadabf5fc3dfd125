"""Abusive API traffic against a real daemon: every answer is a 4xx in the API's error
shape (never a 5xx, a traceback or a hang), and afterwards the daemon is alive, its
children untouched and its log free of errors (issue #13's attack run, as tests)."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import free_port

TOKEN = "abuse-token-0123456789abcdef"
HEADER_TIMEOUT = 1.0


@dataclass
class Live:
    proc: subprocess.Popen[bytes]
    socket: Path
    url: str
    log: Path

    def unix(self) -> httpx.Client:
        return httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d", timeout=30
        )

    def tcp(self, token: str | None = TOKEN) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def pids(self) -> dict[str, int]:
        with self.unix() as c:
            return {r["name"]: r["pid"] for r in c.get("/v1/resources").json()["resources"]}

    def log_lines(self) -> list[dict[str, object]]:
        return [
            json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")
        ]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """One daemon for the module: a resource, a pool, the token on TCP, a short header timeout."""
    tmp = tmp_path_factory.mktemp("abuse")
    (tmp / "token").write_text(TOKEN + "\n")
    port = free_port()
    config = tmp / "supervisor.toml"
    config.write_text(
        f"""[daemon]
control_socket = "{tmp}/control.sock"
http = "127.0.0.1:{port}"
api_token_file = "{tmp}/token"
state_dir = "{tmp}/state"
log_format = "json"
limits = {{ connections = 256, streams = 32, header_timeout = "{HEADER_TIMEOUT}s" }}
[resources.sleeper]
kind = "process"
command = ["sleep", "1000"]
[environments.box]
min_ready = 1
max_size = 2
"""
    )
    log = tmp / "daemon.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    live = Live(proc, tmp / "control.sock", f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 60
    while not answers(live.socket):  # the socket accepting is the event we wait for
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "the daemon did not bind its socket"
        time.sleep(0.05)
    with live.unix() as c:
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the daemon did not become ready"
            time.sleep(0.05)
    try:
        yield live
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def answers(path: Path) -> bool:
    """True once something accepts connections on the unix socket at `path`."""
    with socket.socket(socket.AF_UNIX) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@pytest.fixture
def unchanged(live: Live) -> Iterator[None]:
    """After the test: the daemon alive, the same pids, nothing logged at error level."""
    before = live.pids()
    seen = len(live.log_lines())
    yield
    assert live.proc.poll() is None
    assert live.pids() == before
    errors = [
        line for line in live.log_lines()[seen:] if line.get("level") in ("error", "critical")
    ]
    assert errors == [], errors


def assert_refused(response: httpx.Response, status: int | None = None) -> None:
    """A 4xx in the one error shape."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if status is not None:
        assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert isinstance(error["code"], str)
    assert error["message"]
    assert isinstance(error["retryable"], bool)


def deep(levels: int) -> bytes:
    return b'{"a":' * levels + b"1" + b"}" * levels


JSON = {"content-type": "application/json"}


@pytest.mark.usefixtures("unchanged")
def test_deeply_nested_json_is_400_on_every_body_route(live: Live) -> None:
    """10,000 nested objects or arrays: 400 on acquire, reload, exec and heartbeat."""
    with live.unix() as c:
        sid = c.post("/v1/environments/box/sessions").json()["session_id"]
        try:
            for path in (
                "/v1/environments/box/sessions",
                "/v1/reload",
                f"/v1/sessions/{sid}/exec",
                f"/v1/sessions/{sid}/heartbeat",
                "/v1/resources/sleeper/restart",
            ):
                for body in (deep(10_000), b"[" * 10_000 + b"]" * 10_000):
                    assert_refused(c.post(path, content=body, headers=JSON), 400)
        finally:
            c.delete(f"/v1/sessions/{sid}")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "since", ["9" * 8000, "9" * 26, "-1", "abc", "1e3", "\uff11\uff12", "99999999999999999999"]
)
def test_bad_event_positions_are_400_naming_the_parameter(live: Live, since: str) -> None:
    """`since` that is not a sequence number in range: 400 at once, naming `since`."""
    with live.unix() as c:
        answer = c.get("/v1/events", params={"since": since})
    assert_refused(answer, 400)
    assert answer.json()["error"]["message"].startswith("since:")


@pytest.mark.usefixtures("unchanged")
def test_a_position_from_the_future_resets_the_stream_instead_of_hanging(live: Live) -> None:
    """A `since` past the last event (a previous run of the daemon): a reset marker, then
    this run's events from the start."""
    with live.unix() as c, c.stream("GET", "/v1/events", params={"since": 10**15}) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "event: gap"
        gap = json.loads(next(lines).removeprefix("data: "))
        assert gap["reset"] is True
        assert gap["since"] == 10**15


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("path", ["/v1/environments/box/sessions", "/v1/reload"])
def test_a_huge_body_is_answered_413_not_a_broken_pipe(live: Live, path: str) -> None:
    """10 MB declared or streamed: the client reads a 413, and nothing is acquired."""
    with live.unix() as c:
        sessions = c.get("/v1/environments/box").json()["active_sessions"]
        assert_refused(c.post(path, content=b"x" * (10 << 20), headers=JSON), 413)

        def chunks() -> Iterator[bytes]:
            for _ in range(40):
                yield b" " * (64 << 10)

        assert_refused(c.post(path, content=chunks(), headers=JSON), 413)
        assert c.get("/v1/environments/box").json()["active_sessions"] == sessions


@pytest.mark.usefixtures("unchanged")
def test_a_form_body_is_415_and_acquires_nothing(live: Live) -> None:
    """A form-encoded body is not an acquire."""
    with live.unix() as c:
        answer = c.post("/v1/environments/box/sessions", data={"ttl": "10s"})
        assert_refused(answer, 415)
        assert c.get("/v1/environments/box").json()["active_sessions"] == 0


@pytest.mark.usefixtures("unchanged")
def test_a_slow_request_head_is_cut_off(live: Live) -> None:
    """Headers sent a byte at a time: 408 and a closed connection after the header
    timeout, not a connection held forever."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(live.socket))
        s.settimeout(HEADER_TIMEOUT * 20)
        began = time.monotonic()
        answer = b""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in b"GET /v1/resources HTTP/1.1\r\nHost: d\r\nX-Slow: " + b"x" * 100:
                s.send(bytes([byte]))  # the attack itself: a byte at a time
                time.sleep(HEADER_TIMEOUT / 8)
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(4096):
                answer += chunk
        assert time.monotonic() - began < HEADER_TIMEOUT * 20
    assert answer.startswith(b"HTTP/1.1 408"), answer


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/../../etc/passwd"),
        ("GET", "//v1//resources"),
        ("GET", "/v1/resources/%00"),
        ("GET", "/v1/resources/" + "x" * 8000),
        ("BREW", "/v1/resources"),
        ("TRACE", "/v1/resources"),
        ("OPTIONS", "/v1/reload"),
        ("PUT", "/v1/sessions/x"),
        ("POST", "/v1/sessions/%2e%2e/exec"),
        ("PUT", "/v1/environments/box/sessions"),  # GET lists them (the console)
        ("DELETE", "/v1/sessions/" + "ü" * 200),
    ],
)
def test_odd_paths_and_methods_are_4xx(live: Live, method: str, path: str) -> None:
    """Traversal, NULs, long names and unknown methods: a 4xx in the error shape."""
    with live.unix() as c:
        assert_refused(c.request(method, path))


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Basic Zm9vOmJhcg==", "Bearer wrong", "Bearer " + "x" * 8000,
     f"Bearer {TOKEN}x", f"bearer  {TOKEN[:-1]}"],
)  # fmt: skip
def test_bad_or_missing_tokens_are_401_over_tcp(live: Live, authorization: str | None) -> None:
    """Every wrong way to present the token is 401; the token is never echoed."""
    headers = {} if authorization is None else {"authorization": authorization}
    with httpx.Client(base_url=live.url, timeout=30) as c:
        answer = c.get("/v1/resources", headers=headers)
    assert_refused(answer, 401)
    assert TOKEN not in answer.text


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/reload", {"dry_run": "maybe"}),
        ("/v1/reload", {"dry_run": "1" * 5000}),
        ("/v1/events", {"since": "1" * 5000}),
    ],
)
def test_bad_query_values_are_400(live: Live, path: str, params: dict[str, str]) -> None:
    """A query value out of its type or range: 400 naming the parameter."""
    with live.unix() as c:
        answer = c.request("GET" if "events" in path else "POST", path, params=params)
    assert_refused(answer, 400)
    assert answer.json()["error"]["message"].startswith(next(iter(params)))


@pytest.mark.usefixtures("unchanged")
def test_bodies_that_are_not_what_the_route_takes_are_422(live: Live) -> None:
    """Wrong types, unknown fields, NULs, huge numbers and NaN: 422 or 400 with the field."""
    with live.unix() as c:
        for body in (
            {"ttl": True},
            {"ttl": 10**400},
            {"wait": -1},
            {"labels": {"k" * 300: "v"}},
            {"labels": {str(i): "v" for i in range(100)}},
            {"unexpected": 1},
        ):
            assert_refused(c.post("/v1/environments/box/sessions", json=body), 422)
        assert_refused(
            c.post("/v1/environments/box/sessions", content=b'{"ttl": NaN}', headers=JSON), 400
        )
        assert c.get("/v1/environments/box").json()["active_sessions"] == 0


methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"])
segments = st.one_of(
    st.sampled_from(["v1", "resources", "sleeper", "environments", "box", "sessions", "exec",
                     "heartbeat", "reload", "events", "credentials", "restart", "metrics",
                     "healthz", "..", "%00", "%2F", ""]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12),
)  # fmt: skip
bodies = st.one_of(
    st.none(),
    st.binary(max_size=64),
    st.recursive(
        st.one_of(
            st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
        ),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=10,
    ).map(lambda v: json.dumps(v).encode()),
)
content_types = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/merge-patch+json",
    ]
)


@pytest.mark.usefixtures("unchanged")
@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(methods, st.lists(segments, min_size=1, max_size=5), bodies, content_types, st.booleans())
def test_random_requests_never_get_a_5xx(
    live: Live,
    method: str,
    parts: list[str],
    body: bytes | None,
    content_type: str | None,
    over_tcp: bool,
) -> None:
    """Any method, path, body and content type: never a 5xx, never a hang."""
    path = "/" + "/".join(parts)
    headers = {"content-type": content_type} if content_type else {}
    with live.tcp() if over_tcp else live.unix() as c:
        try:
            answer = c.request(method, path, content=body, headers=headers)
        except httpx.InvalidURL:
            return  # the client refused to send it
    assert answer.status_code < 500, (method, path, answer.status_code, answer.text[:300])
    if answer.status_code == 201:  # an acquire went through: give the sandbox back
        with live.unix() as c:
            c.delete(f"/v1/sessions/{answer.json()['session_id']}")


# ------------------------------------------------- found by an independent attack run


@pytest.mark.usefixtures("unchanged")
def test_clients_that_hang_up_mid_body_never_take_the_daemon_down(live: Live) -> None:
    """A body cut short on the control socket (an error answer met a half-closed stream
    and killed the daemon in 1 to 12 tries): 100 tries, the daemon serves on."""
    for path in ("/v1/sessions/x/heartbeat", "/v1/reload", "/v1/environments/box/sessions"):
        for _ in range(35):
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(live.socket))
                head = f"POST {path} HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
                s.sendall(head.encode() + b"Content-Length: 100\r\n\r\n{")
    with live.unix() as c:
        assert c.get("/healthz").status_code == 200


@pytest.mark.usefixtures("unchanged")
def test_closed_connections_give_their_slot_back(live: Live) -> None:
    """Connect-and-close past the cap (256 here): closed connections held their slot for
    75 s and locked the listener out; now the next client is served."""
    for _ in range(400):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(live.socket))
    deadline = time.monotonic() + 30
    with live.unix() as c:
        while (answer := c.get("/healthz")).status_code != 200:  # reaping is asynchronous
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.05)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [b'{"a": "' + b'"\\' * 300_000 + b'"}', b'{"ttl": "' + b"1" * 500_000 + b'"}'],
    ids=["unterminated-strings", "digits-without-unit"],
)
def test_crafted_bodies_are_answered_without_stalling_the_daemon(live: Live, body: bytes) -> None:
    """Bodies that made the depth scan or the duration parser quadratic (9-12 s stalls at
    60 KB): answered at once, with a 4xx."""
    with live.unix() as c:
        answer = c.post("/v1/environments/box/sessions", content=body, headers=JSON)
    assert_refused(answer)


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("size", [2 << 20, 20 << 20])
def test_a_client_that_writes_a_huge_body_first_reads_the_413(live: Live, size: int) -> None:
    """A raw client writes its whole (declared) body, then reads: the 413 is there (it met
    a reset before, from 2 MiB on)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(live.socket))
        s.sendall(
            b"POST /v1/reload HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {size}\r\n\r\n".encode()
        )
        chunk = b" " * 65536
        for _ in range(size // len(chunk)):
            s.sendall(chunk)
        assert s.recv(64).startswith(b"HTTP/1.1 413")


@pytest.mark.usefixtures("unchanged")
def test_a_stalled_body_is_given_up(live: Live) -> None:
    """A head with a Content-Length, then silence: 408 after the header timeout."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(live.socket))
        s.settimeout(HEADER_TIMEOUT * 20)
        s.sendall(
            b"POST /v1/reload HTTP/1.1\r\nHost: d\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        assert s.recv(64).startswith(b"HTTP/1.1 408")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: d\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\n\r\n",
        b"POST /v1/reload HTTP/1.1\r\nHost: d\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /v1/reload HTTP/1.1\r\nHost: d\r\nContent-Length: 1x\r\n\r\n",
    ],
    ids=["h2-preface", "h2c-upgrade", "unknown-transfer-coding", "bad-content-length"],
)
def test_only_http_1_1_is_spoken_and_framing_errors_are_4xx(
    live: Live, request_bytes: bytes
) -> None:
    """No HTTP/2 (its connections escaped the head deadline); a request the parser refuses
    gets a 4xx in the error shape (h11 says 501 for an unknown transfer-coding)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(live.socket))
        s.settimeout(30)
        s.sendall(request_bytes)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in answer or (
                b'"error"' not in answer and b" 200 " not in answer[:16]
            ):
                if not (chunk := s.recv(4096)):
                    break
                answer += chunk
    status = int(answer.split(b" ", 2)[1])
    assert answer.startswith(b"HTTP/1.1 ")
    assert status < 500 or status == 503, answer[:200]
    if status >= 400:
        assert b'"error"' in answer


@pytest.mark.usefixtures("unchanged")
def test_a_trailing_slash_is_a_404_not_a_redirect_built_from_the_host_header(live: Live) -> None:
    """No `Location: http://<whatever Host said>/metrics`."""
    with live.tcp() as c:
        answer = c.get("/metrics/", headers={"host": "evil.example.com"})
    assert answer.status_code == 404
    assert "location" not in answer.headers


@pytest.mark.usefixtures("unchanged")
def test_an_idempotency_key_reused_for_another_request_is_409(live: Live) -> None:
    """The same key with another body is a client bug, not a replay."""
    with live.unix() as c:
        first = c.post(
            "/v1/environments/box/sessions",
            json={"labels": {"a": "1"}},
            headers={"idempotency-key": "k-409"},
        )
        assert first.status_code == 201
        again = c.post(
            "/v1/environments/box/sessions",
            json={"labels": {"a": "2"}},
            headers={"idempotency-key": "k-409"},
        )
        assert_refused(again, 409)
        same = c.post(
            "/v1/environments/box/sessions",
            json={"labels": {"a": "1"}},
            headers={"idempotency-key": "k-409"},
        )
        assert same.status_code == 200
        assert same.json()["session_id"] == first.json()["session_id"]
        c.delete(f"/v1/sessions/{first.json()['session_id']}")


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    "body",
    [
        {"ttl": "2h"},
        {"labels": {"": "v"}},
        {"labels": {"a\u0000b": "v"}},
        {"labels": {"k": "\u001b[31m"}},
    ],
)
def test_a_ttl_over_session_ttl_and_odd_labels_are_422(live: Live, body: dict[str, Any]) -> None:
    """ttl is capped by the environment's session_ttl (1h by default); label keys are
    names and values are printable."""
    with live.unix() as c:
        assert_refused(c.post("/v1/environments/box/sessions", json=body), 422)


@pytest.mark.usefixtures("unchanged")
def test_verbs_during_shutdown_are_503(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Once the daemon is stopping, start/restart and environment restart are refused: what
    they would start, the shutdown would not stop (they were accepted with 202)."""
    tmp = tmp_path_factory.mktemp("stopping")
    config = tmp / "c.toml"
    config.write_text(
        f'[daemon]\ncontrol_socket = "{tmp}/s.sock"\nhttp = "127.0.0.1:0"\nstate_dir = "{tmp}/state"\n'
        'shutdown_timeout = "30s"\n[resources.stubborn]\nkind = "process"\n'
        'command = ["sh", "-c", "trap \\"\\" TERM; while true; do sleep 0.1; done"]\n'
        'stop_timeout = "20s"\n[environments.box]\nmin_ready = 0\nmax_size = 1\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "-c", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        daemon = Live(proc, tmp / "s.sock", "", tmp / "none")
        deadline = time.monotonic() + 60
        while not answers(daemon.socket):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with daemon.unix() as c:
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            while c.get("/readyz").status_code != 503:  # the state we wait for: stopping
                assert time.monotonic() < deadline
                time.sleep(0.05)
            for path in ("/v1/resources/stubborn/restart", "/v1/environments/box/restart"):
                answer = c.post(path)
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "stopping"
    finally:
        proc.kill()
        proc.wait(timeout=30)
