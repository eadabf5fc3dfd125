"""A local server's launch spec: the PSK stays out of its argv and environment."""

from __future__ import annotations

from supervisor.launchers.deephaven.server import PSK_ENV, ServerSpec, generate_psk


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
