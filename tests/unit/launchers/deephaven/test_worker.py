"""The client helper program: what it reports about a failed call."""

from __future__ import annotations

from types import SimpleNamespace


def test_the_helper_reports_the_grpc_status_from_the_exception_chain() -> None:
    """pydeephaven wraps gRPC errors in DHError: the code comes from `__cause__`."""
    from supervisor.launchers.deephaven.worker import SettingsError, describe  # noqa: PLC0415 - it loads pydeephaven

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
