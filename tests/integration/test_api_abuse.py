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
        ("GET", "/v1/environments/box/sessions"),
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
