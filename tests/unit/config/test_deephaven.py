"""`kind = "deephaven"` settings: defaults per mode, and errors that name the key to fix."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from supervisor.config.deephaven import (
    PSK_HANDLER,
    DeephavenConfig,
    normalise_auth,
    parse_heap,
)
from supervisor.config.load import load_text
from supervisor.errors import ConfigError


def config(**fields: Any) -> DeephavenConfig:
    return DeephavenConfig.model_validate({"kind": "deephaven", **fields})


def problems(**fields: Any) -> list[str]:
    """Errors as `config.load` shows them: dotted key path, then the message."""
    with pytest.raises(ValidationError) as info:
        config(**fields)
    return [
        ".".join(str(p) for p in e["loc"]) + ": " + e["msg"].removeprefix("Value error, ")
        for e in info.value.errors()
    ]


def test_connect_defaults_to_anonymous_and_launch_to_psk_on_an_auto_port() -> None:
    """Connecting is anonymous unless told; a launched server gets a PSK and a free port."""
    connect = config(port=10000)
    assert (connect.auth_type, connect.host, connect.lazy) == ("Anonymous", "127.0.0.1", False)
    assert (connect.liveness.interval, connect.liveness.timeout, connect.liveness.failures) == (
        10.0,
        5.0,
        2,
    )
    launched = config(launch="python")
    assert launched.auth_type == PSK_HANDLER
    assert launched.port is None  # "auto" when launched


@pytest.mark.parametrize(
    ("given_", "expected"),
    [
        ("psk", PSK_HANDLER),
        ("PSK", PSK_HANDLER),
        ("anonymous", "Anonymous"),
        ("Basic", "Basic"),
        ("com.example.MyHandler", "com.example.MyHandler"),
    ],
)
def test_auth_names_are_normalised(given_: str, expected: str) -> None:
    """The PSK shorthand the server does not understand becomes the handler's class name."""
    assert normalise_auth(given_) == expected


@pytest.mark.parametrize(
    ("heap", "mb"), [("1g", 1024), ("2.5g", 2560), ("512m", 512), ("4G", 4096)]
)
def test_heap_sizes_become_megabytes(heap: str, mb: int) -> None:
    """Fractional gigabytes are converted to whole megabytes for -Xmx."""
    assert parse_heap(heap) == mb
    assert config(launch="python", heap=heap).heap_mb == mb


@given(st.text(max_size=8))
def test_heap_parsing_accepts_only_the_documented_forms(text: str) -> None:
    """Anything else is a ValueError with a hint, never a crash or a silent default."""
    try:
        megabytes = parse_heap(text)
    except ValueError as exc:
        message = str(exc)
    else:
        message = "heap"
        assert megabytes >= 64
    assert "heap" in message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"port": 1, "auth": "psk", "token": "a", "token_env": "B"},
            "token_env: set only one of token, token_env or token_file (also set: token)",
        ),
        (
            {"port": 1, "auth": "psk", "token_env": "B", "token_file": "/x"},
            "token_file: set only one of token, token_env or token_file (also set: token_env)",
        ),
        ({"port": 1, "auth": "psk"}, ": auth 'io.deephaven.authentication.psk."),
        ({"port": 1, "token": "x"}, ": a token is set but auth is anonymous"),
        ({"port": "auto"}, 'port: "auto" is only for launched servers'),
        ({"port": 0}, "port: port must be between 1 and 65535"),
        ({"port": 70000}, "port: port must be between 1 and 65535"),
        ({}, ": port is required to connect"),
        ({"port": 1, "heap": "1g"}, 'heap: only used with launch = "python"'),
        ({"launch": "python", "heap": "lots"}, "heap: invalid heap size 'lots'"),
        ({"launch": "python", "image": "x"}, 'image: only used with launch = "docker"'),
        (
            {"launch": "docker", "python_venv": "/v"},
            'python_venv: only used with launch = "python"',
        ),
        ({"port": 1, "tls_root_certs": "/c"}, "tls_root_certs: only used with use_tls = true"),
        ({"port": 1, "auth": "nope"}, "auth: unknown auth 'nope'"),
        (
            {"launch": "python", "auth": "basic", "token": "u:p"},
            ": auth: a launched server supports",
        ),
        ({"port": 1, "liveness": {"failures": 0}}, "liveness.failures: must be between 1 and 1000"),
        ({"port": 1, "colour": "red"}, "colour: Extra inputs are not permitted"),
    ],
)
def test_invalid_settings_name_their_key(fields: dict[str, Any], expected: str) -> None:
    """Every problem carries the key path an operator has to change."""
    found = problems(**fields)
    assert any(p.startswith(expected) for p in found), found


def test_a_launched_psk_server_may_generate_its_token() -> None:
    """No token is needed when the daemon launches the server: it generates one."""
    assert config(launch="python", auth="psk").token is None


def test_the_token_stays_out_of_reprs() -> None:
    """A config printed in a log or a traceback does not show the token."""
    assert "s3cret" not in repr(config(port=1, auth="psk", token="s3cret"))


def test_journald_is_refused_for_a_launched_server_whose_output_is_redacted() -> None:
    """Its own `log.target` or the one it inherits from [defaults.log]: named, with the fix;
    a process keeps journald, and a server that says "file" is fine."""
    server = '[resources.dh]\nkind = "deephaven"\nlaunch = "python"\n'
    proc = '[resources.p]\nkind = "process"\ncommand = ["true"]\n'
    for text in (
        '[defaults.log]\ntarget = "journald"\n' + server + proc,
        server + 'log = { target = "journald" }\n' + proc,
    ):
        with pytest.raises(ConfigError) as info:
            load_text(text)
        found = {p.path: p.message for p in info.value.problems}
        assert set(found) == {"resources.dh.log.target"}
        assert 'log = { target = "file" }' in found["resources.dh.log.target"]
    fine = load_text(
        '[defaults.log]\ntarget = "journald"\n' + server + 'log = { target = "file" }\n' + proc
    )
    assert fine.log_for("p").target == "journald"
