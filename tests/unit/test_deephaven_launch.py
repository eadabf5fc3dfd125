"""Pure parts of Deephaven support: full names, error classification, launch specs, redaction."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.launchers.deephaven import (
    PSK_ENV,
    REDACTED,
    Redactor,
    ServerSpec,
    generate_psk,
    is_bind_failure,
    started_port,
)
from supervisor.resources.deephaven_client import _LIVENESS_BY_CODE, ConnectSpec, classify
from supervisor.resources.deephaven_names import FullName
from supervisor.supervision.states import Liveness

GRPC_CODES = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
]


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("community:config:local", ("community", "config", "local")),
        ("community:dynamic:worker-1", ("community", "dynamic", "worker-1")),
        ("enterprise:prod:pq-1", ("enterprise", "prod", "pq-1")),
        ("enterprise:factory:prod", ("enterprise", "factory", "prod")),
        ("enterprise:prod:a:b", ("enterprise", "prod", "a:b")),
    ],
)
def test_full_names_split_on_the_first_two_colons(text: str, parts: tuple[str, ...]) -> None:
    """The name part keeps any further colons, and the round trip is exact."""
    name = FullName.parse(text)
    assert (name.system, name.source, name.name) == parts
    assert str(name) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "community",
        "community:config",
        "community::x",
        ":config:x",
        "x:y:z",
        "community:other:x",
    ],
)
def test_malformed_full_names_are_rejected(text: str) -> None:
    """Missing or empty parts, or an unknown system or source, are errors."""
    with pytest.raises(ValueError, match=r"Deephaven name|unknown"):
        FullName.parse(text)


def test_the_factory_name_is_recognised() -> None:
    """`enterprise:factory:SYSTEM` names a system's session factory."""
    assert FullName.enterprise_factory("prod").is_factory
    assert not FullName.community("local").is_factory


@pytest.mark.parametrize("code", GRPC_CODES)
def test_every_grpc_status_is_classified(code: str) -> None:
    """Every status maps to a liveness; only the documented ones to something specific."""
    expected = _LIVENESS_BY_CODE.get(code, Liveness.UNKNOWN)
    assert classify(code) is expected
    assert set(_LIVENESS_BY_CODE) <= set(GRPC_CODES)


def test_the_documented_classes_of_failure() -> None:
    """Refused -> OFFLINE, bad credentials -> UNAUTHORIZED, bad settings -> MISCONFIGURED."""
    assert classify("UNAVAILABLE") is Liveness.OFFLINE
    assert classify("UNAUTHENTICATED") is Liveness.UNAUTHORIZED
    assert classify(None, "settings") is Liveness.MISCONFIGURED
    assert classify(None, "ValueError") is Liveness.UNKNOWN


def test_the_psk_is_in_neither_the_command_line_nor_the_environment() -> None:
    """`ps` shows argv to everyone and /proc keeps the initial environment: the key goes
    over a socket."""
    psk = generate_psk()
    spec = ServerSpec(host="127.0.0.1", port=10000, psk=psk, heap_mb=2560, jvm_args=("-Dx=1",))
    argv = spec.argv("/tmp/x/key.sock")
    assert psk not in " ".join(argv)
    assert argv[-4:] == ["127.0.0.1", "10000", "-Xmx2560m", "-Dx=1"]
    assert spec.environment({PSK_ENV: "stale", "A": "1"}) == {"A": "1"}
    assert psk not in repr(spec)


def test_anonymous_servers_get_the_anonymous_handler() -> None:
    """Without a PSK the server must be told to accept anonymous logins."""
    spec = ServerSpec(host="127.0.0.1", port=1, psk=None)
    assert spec.argv()[-1] == "-DAuthHandlers=io.deephaven.auth.AnonymousAuthenticationHandler"
    assert PSK_ENV not in spec.environment({PSK_ENV: "inherited"})


def test_generated_psks_are_32_hex_characters() -> None:
    psks = {generate_psk() for _ in range(20)}
    assert len(psks) == 20
    assert all(len(p) == 32 and int(p, 16) >= 0 for p in psks)


@given(st.text(min_size=1), st.text())
def test_redaction_removes_every_occurrence(secret: str, line: str) -> None:
    """A secret anywhere in a line, any number of times, never survives redaction."""
    redacted = Redactor([secret])(line + secret + line + secret)
    assert secret not in redacted.replace(REDACTED, "") or secret in REDACTED


def test_server_output_markers() -> None:
    """The start line gives the port; a taken port is recognised from the JVM's error."""
    assert started_port("Server started on port 10123") == 10123
    assert started_port("Starting server") is None
    assert is_bind_failure("caused by java.net.BindException: Address already in use")


def test_connect_specs_keep_the_token_out_of_reprs() -> None:
    spec = ConnectSpec("h", 1, "Basic", token="s3cret")
    assert "s3cret" not in repr(spec)
    assert spec.request()["auth_token"] == "s3cret"


def test_the_helper_reports_the_grpc_status_from_the_exception_chain() -> None:
    """pydeephaven wraps gRPC errors in DHError: the code comes from `__cause__`."""
    from supervisor.launchers.deephaven_worker import SettingsError, describe  # noqa: PLC0415

    class Rpc(Exception):  # what describe() relies on from grpc.RpcError
        def code(self) -> SimpleNamespace:
            return SimpleNamespace(name="UNAUTHENTICATED")

        def details(self) -> str:
            return "Authentication details invalid"

    try:
        try:
            raise Rpc("multi-line\nrepr")
        except Rpc as rpc:
            raise RuntimeError("failed to get the configuration constants.") from rpc
    except RuntimeError as exc:
        error = describe(exc)
    assert error == {
        "type": "RuntimeError",
        "code": "UNAUTHENTICATED",
        "message": "RuntimeError: failed to get the configuration constants.: "
        "Authentication details invalid",
    }
    assert describe(SettingsError("tls_root_certs: cannot read"))["type"] == "settings"
