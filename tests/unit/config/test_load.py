"""Config loading: valid files become typed objects; every problem names its key."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config.load import load_default, load_file, load_text, validate
from supervisor.errors import ConfigError

REPO = Path(__file__).resolve().parents[3]
PROC = '[resources.p]\nkind = "process"\ncommand = ["true"]\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return [str(p) for p in info.value.problems]


def test_the_shipped_config_is_the_embedded_default_and_valid() -> None:
    """config/supervisor.toml is the embedded default, and it validates."""
    shipped = REPO / "config" / "supervisor.toml"
    embedded = REPO / "supervisor" / "config" / "default.toml"
    assert shipped.read_text() == embedded.read_text()
    assert load_file(shipped) == load_default()
    assert set(load_default().resources) == {"web", "heartbeat"}
    assert set(load_default().environments) == {"scratch"}


def test_defaults_apply_and_overrides_merge_key_by_key() -> None:
    """A resource's restart table overrides only the keys it names."""
    config = load_text(
        """
        [defaults.restart]
        policy = "on-failure"
        backoff = { initial = "2s", max = "1m" }
        [resources.p]
        kind = "process"
        command = ["sleep", "1"]
        restart = { backoff = { max = "30s" }, intensity = { max_restarts = 3 } }
        """
    )
    restart = config.restart_for("p")
    assert restart.policy == "on-failure"
    assert (restart.backoff.initial, restart.backoff.max, restart.backoff.factor) == (
        2.0,
        30.0,
        2.0,
    )
    assert (restart.intensity.max_restarts, restart.intensity.within) == (3, 300.0)
    assert restart.fatal_retry_after == 30.0
    assert config.resources["p"].stop_signal == "SIGTERM"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[daemon]\nlog_levl = 'info'", "daemon.log_levl: unknown key (did you mean 'log_level'?)"),
        ("[daemon]\nlog_level = 'loud'", "daemon.log_level: Input should be"),
        (
            "[daemon]\nshutdown_timeout = '5 fortnights'",
            "daemon.shutdown_timeout: invalid duration",
        ),
        (
            "[daemon]\nshutdown_timeout = 0",
            "daemon.shutdown_timeout: must be more than 0s and at most 1d",
        ),
        ("[daemon]\nhttp = 'localhost'", 'daemon.http: expected "host:port"'),
        ("[daemon]\nhttp = '127.0.0.1:99999'", 'daemon.http: expected "host:port"'),
        (
            "[defaults.restart]\npolicy = 'sometimes'",
            "defaults.restart.policy: Input should be 'always'",
        ),
        (
            "[defaults.restart]\nbackoff = { factor = 0.5 }",
            "defaults.restart.backoff.factor: must be between 1 and 100",
        ),
        ("[defaults.restart]\nbackoff = { jitter = 1.5 }", "defaults.restart.backoff.jitter"),
        (
            "[defaults.restart]\nbackoff = { initial = '10s', max = '5s' }",
            "defaults.restart.backoff: max (5s) must be >= initial (10s)",
        ),
        (
            "[defaults.restart]\nintensity = { max_restarts = 0 }",
            "defaults.restart.intensity.max_restarts",
        ),
        ("[defaults]\nrestrat = {}", "defaults.restrat: unknown key (did you mean 'restart'?)"),
        (
            "[resources.p]\ncommand = ['x']",
            'resources.p.kind: required key is missing (e.g. kind = "process")',
        ),
        ("[resources.p]\nkind = 'teapot'", "resources.p.kind: unknown kind 'teapot'"),
        ("[resources.p]\nkind = 'process'", "resources.p.command: required key is missing"),
        (
            "[resources.p]\nkind = 'process'\ncommand = 'python3 -m x'",
            "resources.p.command: must be a list of strings",
        ),
        (
            "[resources.p]\nkind = 'process'\ncommand = []",
            "resources.p.command: List should have at least 1 item",
        ),
        (
            "[resources.p]\nkind = 'process'\ncommand = ['x', 3]",
            "resources.p.command.1: Input should be a valid string",
        ),
        (PROC + "stop_signal = 'SIGBOGUS'", "resources.p.stop_signal: unknown signal 'SIGBOGUS'"),
        (PROC + "stop_timeout = 'soon'", "resources.p.stop_timeout: invalid duration"),
        (
            PROC + "health = { interval = '1s' }",
            "resources.p.health: set exactly one of exec, http or tcp (found: none)",
        ),
        (
            PROC + "health = { tcp = 'x:1', http = 'http://x' }",
            "resources.p.health: set exactly one of exec, http or tcp (found: http, tcp)",
        ),
        (
            PROC + "health = { http = 'ftp://x' }",
            "resources.p.health.http: expected an http:// or https:// URL",
        ),
        (PROC + "health = { tcp = 'nope' }", 'resources.p.health.tcp: expected "host:port"'),
        (PROC + "health = { tcp = 'h:1', failures = 0 }", "resources.p.health.failures"),
        (
            PROC + "startup = { tcp = 'h:1', failures = 1 }",
            "resources.p.startup.failures: unknown key",
        ),
        (PROC + "env = { 'A=B' = 'x' }", "resources.p.env.A=B"),
        (PROC + "success_exit_codes = [256]", "resources.p.success_exit_codes.0"),
        (
            PROC + "depends_on = ['ghost']",
            "resources.p.depends_on.0: no resource named 'ghost' (known: p)",
        ),
        (
            PROC + "depends_on = ['p']",
            "resources.p.depends_on.0: a resource cannot depend on itself",
        ),
        (
            PROC + "restart = { backoff = { initial = '10m' } }",
            "resources.p.restart.backoff: max (5m) must be >= initial (10m)",
        ),
        (
            PROC + "restart = { polcy = 'never' }",
            "resources.p.restart.polcy: unknown key (did you mean 'policy'?)",
        ),
        (PROC + "comand = ['x']", "resources.p.comand: unknown key (did you mean 'command'?)"),
        (
            "[resources.'has space']\nkind = 'process'\ncommand = ['x']",
            "resources.has space: names must start",
        ),
        (
            "[environments.e]\nmin_ready = 5\nmax_size = 2",
            "environments.e: min_ready (5) must be <= max_size (2)",
        ),
        ("[environments.e]\nbackend = 'vm'", "environments.e.backend: Input should be"),
        (
            "[nonsense]\nx = 1",
            "nonsense: unknown key (allowed: daemon, defaults, environments, groups, mcp, "
            "resources)",
        ),
        ("x = ", "not valid TOML"),
    ],
)
def test_invalid_input_names_the_key(text: str, expected: str) -> None:
    """Each kind of mistake is reported with its dotted key path and an actionable reason."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_dependency_cycles_are_refused() -> None:
    """A cycle in depends_on is one problem naming the whole cycle."""
    text = "\n".join(
        f'[resources.{n}]\nkind = "process"\ncommand = ["x"]\ndepends_on = ["{d}"]'
        for n, d in [("a", "b"), ("b", "c"), ("c", "a")]
    )
    assert problems(text) == ["resources.a.depends_on: dependency cycle: a -> b -> c -> a"]


def test_all_problems_are_reported_at_once() -> None:
    """One run of `check` lists every field-level problem, not just the first."""
    found = problems("[daemon]\nlog_level = 1\nlog_format = 2\n" + PROC + "stop_timeout = 'x'")
    assert len(found) == 3


def test_start_order_puts_dependencies_first() -> None:
    """start_order lists each resource after its dependencies, otherwise in file order."""
    config = load_text(
        '[resources.app]\nkind = "process"\ncommand = ["x"]\ndepends_on = ["db"]\n'
        '[resources.db]\nkind = "process"\ncommand = ["x"]\n'
        '[resources.other]\nkind = "process"\ncommand = ["x"]\n'
    )
    assert config.start_order() == ["db", "app", "other"]


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    """A missing file is reported, not raised as OSError."""
    with pytest.raises(ConfigError, match="cannot read file"):
        load_file(tmp_path / "missing.toml")


toml_scalars = st.one_of(
    st.text(max_size=8), st.integers(-5, 10**6), st.floats(allow_nan=False), st.booleans()
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
keys = st.sampled_from(
    ["daemon", "defaults", "resources", "environments", "kind", "command", "restart", "x"]
)


@settings(max_examples=300)
@given(
    st.dictionaries(keys, toml_values | st.dictionaries(keys, toml_values, max_size=4), max_size=4)
)
def test_garbage_is_refused_cleanly(raw: dict[str, object]) -> None:
    """Arbitrary data either validates or raises ConfigError: never anything else."""
    try:
        validate(raw)
    except ConfigError as exc:
        problems = exc.problems
    else:
        return
    assert problems
    assert all(p.message for p in problems)


def test_valid_config_round_trips() -> None:
    """A validated config dumped and validated again is the same config."""
    config = load_default()
    assert validate(config.model_dump(mode="json")) == config
