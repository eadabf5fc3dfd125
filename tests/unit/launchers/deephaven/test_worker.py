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


def test_a_probe_logs_in_as_pydeephaven_would() -> None:
    """The `authorization` value is pydeephaven's, byte for byte, for every auth type."""
    from supervisor.launchers.deephaven.worker import auth_header  # noqa: PLC0415 - it loads pydeephaven

    psk = "io.deephaven.authentication.psk.PskAuthenticationHandler"
    assert auth_header("Anonymous", "ignored") == "Anonymous"
    assert auth_header("Basic", "user:pw") == "Basic dXNlcjpwdw=="
    assert auth_header(psk, "k3y") == f"{psk} k3y"


def test_a_console_error_keeps_the_python_part() -> None:
    """The server wraps a Python error in a Java exception: the user reads Python."""
    from supervisor.launchers.deephaven.worker import (  # noqa: PLC0415 - it loads pydeephaven
        ScriptError,
        describe,
        python_part,
    )

    message = (
        "java.lang.RuntimeException: Error in Python interpreter:\n"
        "Traceback (most recent call last):\n"
        '  File "<string>", line 1, in <module>\n'
        "KeyboardInterrupt\n\n"
        "\tat org.jpy.PyLib.executeCode(Native Method)\n"
        "\tat org.jpy.PyObject.executeCode(PyObject.java:172)\n"
    )
    text = python_part(message)
    assert text == (
        "Traceback (most recent call last):\n"
        '  File "<string>", line 1, in <module>\n'
        "KeyboardInterrupt"
    )
    assert describe(ScriptError(text)) == {"type": "script", "code": None, "message": text}
