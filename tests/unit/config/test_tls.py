"""`daemon.tls` and the read-only token: refused at check time with the key path."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from supervisor.config.load import load_text, validate
from supervisor.config.tls import TlsProblem, server_context
from supervisor.errors import ConfigError
from tests.tls import self_signed


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def tls_toml(cert: Path, key: Path, http: str = '"127.0.0.1:0"') -> str:
    return f'[daemon]\nhttp = {http}\ntls = {{ cert = "{cert}", key = "{key}" }}\n'


def test_a_cert_and_key_that_load_together_pass(tmp_path: Path) -> None:
    """A self-signed pair is accepted and makes a server context."""
    pair = self_signed(tmp_path)
    assert problems(tls_toml(pair.cert, pair.key)) == []
    assert server_context(pair.cert, pair.key).check_hostname is False


def test_an_unreadable_cert_is_refused_at_daemon_tls_cert(tmp_path: Path) -> None:
    """A missing cert file is reported at daemon.tls.cert with the reason."""
    pair = self_signed(tmp_path)
    found = problems(tls_toml(tmp_path / "missing.crt", pair.key))
    assert any(p.startswith("daemon.tls.cert: cannot read") for p in found), found


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    """A cert or key file that holds no PEM block is refused at its own key."""
    pair = self_signed(tmp_path)
    junk = tmp_path / "junk"
    junk.write_text("not a certificate\n")
    assert any(p.startswith("daemon.tls.cert: ") for p in problems(tls_toml(junk, pair.key)))
    assert any(p.startswith("daemon.tls.key: ") for p in problems(tls_toml(pair.cert, junk)))


def test_a_key_of_another_cert_is_refused_at_daemon_tls_key(tmp_path: Path) -> None:
    """The key must be the cert's: a mismatched pair is refused at daemon.tls.key."""
    one, other = self_signed(tmp_path, "one"), self_signed(tmp_path, "other")
    found = problems(tls_toml(one.cert, other.key))
    assert any(p.startswith("daemon.tls.key: ") and "not the key" in p for p in found), found


def test_a_key_with_a_passphrase_is_refused_without_a_prompt(tmp_path: Path) -> None:
    """An encrypted key is refused (the daemon runs unattended), never prompted for."""
    pair = self_signed(tmp_path)
    locked = tmp_path / "locked.key"
    subprocess.run(
        ["openssl", "pkey", "-in", str(pair.key), "-out", str(locked), "-aes256",
         "-passout", "pass:secret"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    with pytest.raises(TlsProblem) as caught:
        server_context(pair.cert, locked)
    assert caught.value.key == "key"
    assert "passphrase" in str(caught.value)


def test_tls_without_the_tcp_listener_is_refused(tmp_path: Path) -> None:
    """TLS is for the TCP listener: a config with no http and a tls table is refused."""
    pair = self_signed(tmp_path)
    tls = {"cert": str(pair.cert), "key": str(pair.key)}
    with pytest.raises(ConfigError) as caught:
        validate({"daemon": {"http": None, "tls": tls}})
    assert any("TLS is for the TCP listener" in str(p) for p in caught.value.problems)


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot read"), ("  \n", "is empty")])
def test_an_unusable_read_token_file_is_refused(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    """api_read_token_file is validated as api_token_file is."""
    token = tmp_path / "read-token"
    if content is not None:
        token.write_text(content)
    found = problems(f'[daemon]\napi_read_token_file = "{token}"\n')
    assert any(p.startswith("daemon.api_read_token_file: ") and expected in p for p in found)


def test_the_read_token_must_differ_from_the_full_one(tmp_path: Path) -> None:
    """The same token in both files is refused: it would make the read-only one full."""
    (tmp_path / "a").write_text("same\n")
    (tmp_path / "b").write_text("same")
    text = f'[daemon]\napi_token_file = "{tmp_path}/a"\napi_read_token_file = "{tmp_path}/b"\n'
    found = problems(text)
    assert any(p.startswith("daemon.api_read_token_file: ") and "same" in p for p in found)
