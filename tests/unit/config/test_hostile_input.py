"""Config input that must be refused cleanly: lax types, unbounded numbers, deep nesting,
duplicate keys, NUL characters and secrets (issue #13's attack run, one test per case)."""

from __future__ import annotations

import copy
import math
import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from supervisor.config.load import MAX_DEPTH, load_file, load_text, validate
from supervisor.config.reference import bounded_fields, fields_of, numeric_leaves, table
from supervisor.config.schema import Config
from supervisor.config.types import Range
from supervisor.errors import ConfigError

PROC = '[resources.p]\nkind = "process"\ncommand = ["x"]\n'
ENV = "[environments.e]\n"
SECRET = "PLANTED-SECRET-7f3a9c"
README = Path(__file__).parents[3] / "README.md"


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # 1. A pool size that once made a reload allocate until the OOM killer came.
        (ENV + "max_size = 99999999999999999999999", "environments.e.max_size: must be between"),
        # 2. Lax types: a string is never a bool or a number, a float never an int.
        (PROC + 'autostart = "yes"', "resources.p.autostart: Input should be a valid boolean"),
        (PROC + "autostart = 1", "resources.p.autostart: Input should be a valid boolean"),
        (PROC + 'log_output = "yes"', "resources.p.log_output: Input should be a valid boolean"),
        (PROC + "log_output = 1", "resources.p.log_output: Input should be a valid boolean"),
        (PROC + 'success_exit_codes = ["0"]', "resources.p.success_exit_codes.0: Input should"),
        (
            PROC + 'restart = { intensity = { max_restarts = "3" } }',
            "resources.p.restart.intensity.max_restarts: Input should be a valid integer",
        ),
        (ENV + 'max_size = "3"', "environments.e.max_size: Input should be a valid integer"),
        (ENV + "max_size = 3.0", "environments.e.max_size: Input should be a valid integer"),
        (
            '[resources.p]\nkind = "process"\ncommand = ["   "]',
            "resources.p.command: the program (the first element) must not be blank",
        ),
        (
            '[resources.p]\nkind = "process"\ncommand = ["\\u0000"]',
            "resources.p.command.0: strings cannot contain NUL characters",
        ),
        (
            '[resources.p]\nkind = "process"\ncommand = ["sh\\u0000x"]',
            "resources.p.command.0: strings cannot contain NUL characters",
        ),
        (PROC + 'env = { A = "x\\u0000y" }', "resources.p.env.A: strings cannot contain NUL"),
        # 3. Unbounded numbers.
        (ENV + "max_size = 9223372036854775807", "environments.e.max_size: must be between"),
        (PROC + "start_timeout = 1e308", "resources.p.start_timeout: must be more than 0s"),
        (PROC + "start_timeout = inf", "resources.p.start_timeout: duration must be a finite"),
        ("[daemon]\nshutdown_timeout = 1e308", "daemon.shutdown_timeout: must be more than"),
        (
            PROC + 'stop_timeout = "99999999999999999999999d"',
            "resources.p.stop_timeout: must be between 0s and 1d",
        ),
        (ENV + "output_limit = 9223372036854775807", "environments.e.output_limit: must be"),
        (
            ENV + "limits = { open_files = 9223372036854775807 }",
            "environments.e.limits.open_files: must be between 16 and 1048576",
        ),
        # 4. Duplicate keys name their key path.
        ('[daemon]\nhttp = "a:1"\nhttp = "b:2"\n', "daemon.http: defined more than once (line 3)"),
        ("[resources.a]\nx = 1\n[resources.a]\n", "resources.a: defined more than once (line 3)"),
        (
            ENV + "[[environments.e.features]]\nkind = 'plugin'\nentry_point = 'nope'\n",
            "environments.e.features.0.entry_point: no plugin 'nope'",
        ),
    ],
)
def test_each_attack_case_is_refused_with_its_key_path(text: str, expected: str) -> None:
    """Every case of the attack run is one problem naming the key an operator must fix."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


@pytest.mark.parametrize(
    "text",
    [
        "x = " + "[" * 5000 + "]" * 5000,
        "x = " + "{a = " * 3000 + "1" + "}" * 3000,
        "[" * 4000 + "a" + "]" * 4000,
        "a" + ".a" * 5000 + " = 1",
        "x = [" + "[1]," * 20 + "]\n" + "y = " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1),
    ],
)
def test_deep_nesting_is_refused_before_any_recursive_parse(text: str) -> None:
    """Thousands of nested arrays, inline tables or dotted keys: one clear problem."""
    found = problems(text)
    assert len(found) == 1, found
    assert "nested more than 32 levels deep" in found[0]


def test_brackets_inside_strings_and_comments_do_not_count() -> None:
    """The nesting scan skips strings and comments, so real configs are never refused."""
    text = (
        PROC.replace('["x"]', '["sh", "-c", "echo ' + "[" * 100 + '"]')
        + "# "
        + "{" * 100
        + "\n"
        + 'env = { A = \'{{{{\', B = """\n[[[[\n""" }\n'
    )
    assert problems(text) == []


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    """A 17 MiB file is refused by size, before it is parsed."""
    path = tmp_path / "big.toml"
    path.write_bytes(b"# " + b"x" * (17 << 20) + b"\n")
    with pytest.raises(ConfigError, match="larger than 16 MiB"):
        load_file(path)


def test_every_numeric_field_has_a_documented_range() -> None:
    """No number, duration or size in any config model lacks either bound."""
    unbounded = [
        path
        for path, _, field in fields_of(Config)
        for _, ranged in numeric_leaves(
            field.annotation, any(isinstance(m, Range) for m in field.metadata)
        )
        if not ranged
    ]
    assert unbounded == []
    assert all(
        math.isfinite(row.range.low) and math.isfinite(row.range.high) for row in bounded_fields()
    )


def test_the_readme_lists_every_range() -> None:
    """The README's config reference is the table generated from the models."""
    assert table() in README.read_text()


@pytest.mark.parametrize(
    "text",
    [
        f'[resources.dh]\nkind = "deephaven"\nport = 1\nauth = "psk"\ntoken = ["{SECRET}"]',
        f'[resources.dh]\nkind = "deephaven"\nport = 1\nauth = "psk"\ntoken = {{ v = "{SECRET}" }}',
        f'[resources.dh]\nkind = "deephaven"\nport = "auto"\nauth = "psk"\ntoken = "{SECRET}"',
        f'[resources.dh]\nkind = "deephaven-enterprise"\nconnection_json_url = "http://x"\npassword = ["{SECRET}"]',
        PROC + f'env = {{ DB_PASSWORD = ["{SECRET}"] }}',
        PROC + f'env = {{ DB_PASSWORD = {{ x = "{SECRET}" }} }}',
        PROC + f'command = "{SECRET}"',
    ],
)
def test_a_secret_in_a_bad_value_is_never_echoed(text: str) -> None:
    """Problems with secret-bearing fields say what is wrong without quoting the value."""
    found = problems(text)
    assert found
    assert not any(SECRET in p for p in found), found


def test_a_secret_is_masked_in_the_model() -> None:
    """A valid token is held as a secret: repr and dumps show asterisks."""
    config = load_text(
        f'[resources.dh]\nkind = "deephaven"\nport = 1\nauth = "psk"\ntoken = "{SECRET}"'
    )
    assert SECRET not in repr(config)
    assert SECRET not in config.model_dump_json()


# ---------------------------------------------------------------------------- fuzzing

DEFAULT = tomllib.loads(
    resources.files("supervisor.config").joinpath("default.toml").read_text("utf-8")
)


def _paths(value: object, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _paths(item, (*prefix, i))
    return found


PATHS = _paths(DEFAULT)
weird = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.booleans(),
    st.text(),
    st.sampled_from(["", " ", "\x00", "1e308", "99999999999999999999999d", "-1s", "5m", "\u202e"]),
)
values = st.recursive(
    weird,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@example(  # found by a loaded CI run: a key that is not a string
    [(("environments", "scratch", "features", 0, "setup_session"), {}),
     (("environments", "scratch", "features", 0, "setup_session", 0), [])]
)  # fmt: skip
@settings(max_examples=400)
@given(st.lists(st.tuples(st.sampled_from(PATHS), values), min_size=1, max_size=4))
def test_mutated_configs_are_refused_or_within_their_ranges(
    edits: list[tuple[tuple[Any, ...], object]],
) -> None:
    """Any value anywhere in the default config: refused with problems, or accepted with
    every number inside its documented range; never another exception."""
    raw = copy.deepcopy(DEFAULT)
    for path, value in edits:
        target: Any = raw
        try:
            for key in path[:-1]:
                target = target[key]
            target[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue
    try:
        config = validate(raw)
    except ConfigError as exc:
        refused = exc.problems
    else:
        refused = ()
    if refused:
        assert all(p.message for p in refused)
        return
    for row in bounded_fields():
        if row.path.startswith("daemon.") and row.path.count(".") == 1:
            value = getattr(config.daemon, row.path.split(".")[1])
            assert value is None or row.range.check(value) == value


toml_fragments = st.sampled_from(
    ['[', ']', '{', '}', '"', "'", '"""', "'''", "=", ".", ",", "\n", "#", "a", "resources",
     "kind", "1", "1e999", "inf", "nan", "true", "\\u0000", "\\", " ", "[[", "]]", "é", "\u2028"]
)  # fmt: skip


@settings(max_examples=400)
@given(st.lists(toml_fragments | st.text(max_size=4), max_size=60).map("".join))
def test_arbitrary_text_is_a_config_or_a_config_error(text: str) -> None:
    """Any text at all: a Config or a ConfigError, never a traceback."""
    try:
        load_text(text)
    except ConfigError as exc:
        refused = exc.problems
    else:
        refused = (None,)
    assert refused


# ------------------------------------------------- found by an independent attack run


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PROC + f'env = "SECRET_ENV={SECRET}"',
            "resources.p.env: Input should be a valid dictionary",
        ),
        (
            ENV
            + f'[[environments.e.features]]\nkind = "plugin"\nentry_point = "x"\noptions = "{SECRET}"',
            "environments.e.features.0.options: Input should be a valid dictionary",
        ),
    ],
)
def test_a_string_where_a_table_of_secrets_goes_is_not_echoed(text: str, expected: str) -> None:
    """`env = "A=secret"` is refused without quoting it: a table of secrets is secret."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found
    assert not any(SECRET in p for p in found)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" + ".a" * 10_000 + " = 1", "nested more than 32 levels deep (line 1)"),
        ("[" + "a." * 10_000 + "b]", "nested more than 32 levels deep (line 1)"),
        ("x = { " + "a." * 5_000 + "b = 1 }", "nested more than 32 levels deep (line 1)"),
        ("[daemon]\n" + "".join(f"k{i} = 1\n" for i in range(210_000)), "more than 200000 keys"),
        ('x = "' + '\\"' * 100_000 + "\n", "not valid TOML"),
        (PROC + 'stop_timeout = "' + "1" * 20_000 + '"', "resources.p.stop_timeout: invalid duration"),
        (PROC + 'stop_timeout = "\u0661\u0662s"', "resources.p.stop_timeout: invalid duration"),
        (PROC.replace('["x"]', '["\u200b"]'), "resources.p.command: the program (the first element) must not be blank"),
        (PROC + "user = 99999999999999999999", "resources.p.user: a numeric id must be between"),
        (PROC + 'env = { A = "1", A = "2" }', "resources.p.env.A: defined more than once (line 4)"),
        (
            ENV + '[[environments.e.features]]\nkind = "files"\nsource = "/tmp"\ndest = "../../x"',
            "environments.e.features.0.dest: must be a path inside the sandbox",
        ),
    ],
)  # fmt: skip
def test_inputs_that_once_cost_memory_time_or_clarity_are_refused_plainly(
    text: str, expected: str
) -> None:
    """Dotted keys of 10,000 parts (600 MB in tomllib), 210,000 keys (a 200 MB problem
    list), quadratic strings and durations, foreign digits, invisible programs, union
    jargon: one plain problem each, found before anything expensive."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found[:3]
    assert len(found) <= 101


def test_a_byte_order_mark_is_not_a_syntax_error() -> None:
    """Some editors start a file with U+FEFF."""
    assert problems("\ufeff" + PROC) == []


def test_a_fifo_is_refused_not_read(tmp_path: Path) -> None:
    """Reading a FIFO would block check and reloads for ever."""
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_file(fifo)


@pytest.mark.parametrize(("content", "expected"), [(None, "cannot read"), ("  \n", "is empty")])
def test_an_unusable_token_file_fails_check_as_it_fails_a_start(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    """`check` refuses an API token file the daemon could not use."""
    token = tmp_path / "token"
    if content is not None:
        token.write_text(content)
    found = problems(f'[daemon]\napi_token_file = "{token}"\n')
    assert any(p.startswith("daemon.api_token_file: ") and expected in p for p in found), found
