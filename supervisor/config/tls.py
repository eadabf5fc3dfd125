"""TLS for the TCP listener: the server context from `daemon.tls`, checked at load time.

Pure standard library. `server_context` is what `check` runs, so a cert that does not
load is refused with its key path before the daemon ever binds; the daemon builds its
context with the same function at start. A key protected by a passphrase is refused:
the daemon starts unattended (an `ssl` password prompt would hang it).
"""

from __future__ import annotations

import ssl
from pathlib import Path

_MAX_PEM = 1 << 20


class TlsProblem(ValueError):
    """A `daemon.tls` file that cannot serve: `key` is the config key it is about."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _read(path: Path, key: str) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(_MAX_PEM)
    except OSError as exc:
        raise TlsProblem(key, f"cannot read {path}: {exc.strerror}") from None


def _no_passphrase() -> str:
    raise TlsProblem("key", "the key is protected by a passphrase (give an unencrypted key)")


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A TLS server context (TLS 1.2 or later, HTTP/1.1 only) from PEM `cert` and `key`.

    Raises:
        TlsProblem: a file is unreadable, is not PEM, or the two do not load together.
    """
    if b"-----BEGIN CERTIFICATE-----" not in _read(cert, "cert"):
        raise TlsProblem("cert", f"{cert} holds no PEM certificate (BEGIN CERTIFICATE)")
    if b"PRIVATE KEY-----" not in _read(key, "key"):
        raise TlsProblem("key", f"{key} holds no PEM private key (BEGIN ... PRIVATE KEY)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except TlsProblem:
        raise
    except ssl.SSLError as exc:
        reason = exc.reason or str(exc)
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise TlsProblem("key", f"{key} is not the key of the certificate in {cert}") from None
        raise TlsProblem("cert", f"{cert} and {key} do not load together: {reason}") from None
    except OSError as exc:
        raise TlsProblem("cert", f"cannot load {cert}: {exc.strerror or exc}") from None
    return context
