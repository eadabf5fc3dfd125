"""The client helper's proxy: failures classified by gRPC status, tokens out of reprs."""

from __future__ import annotations

import pytest

from supervisor.launchers.deephaven.client import _LIVENESS_BY_CODE, ConnectSpec, classify
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


def test_connect_specs_keep_the_token_out_of_reprs() -> None:
    spec = ConnectSpec("h", 1, "Basic", token="s3cret")
    assert "s3cret" not in repr(spec)
    assert spec.request()["auth_token"] == "s3cret"
