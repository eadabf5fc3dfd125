"""Throwaway TLS material for tests: a self-signed cert for 127.0.0.1, made by openssl."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def self_signed(directory: Path, name: str = "server") -> CertPair:
    """A fresh EC key and a self-signed cert valid for 127.0.0.1 and localhost (1 day)."""
    pair = CertPair(directory / f"{name}.crt", directory / f"{name}.key")
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(pair.key), "-out", str(pair.cert), "-days", "1",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return pair
