"""`[defaults.log]`, a resource's `log` table and `daemon.log_dir`."""

from __future__ import annotations

from pathlib import Path

import pytest

from supervisor.config.diff import plan_reload
from supervisor.config.load import load_text
from supervisor.config.output import LogConfig
from supervisor.errors import ConfigError

PROC = '[resources.p]\nkind = "process"\ncommand = ["x"]\n'


def problems(text: str) -> list[str]:
    try:
        load_text(text)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_defaults_keep_50m_and_5_backups_in_files_and_leave_the_daemon_log_alone() -> None:
    """Unset, output goes to 50 MiB files with 5 backups, and not into the daemon's log."""
    config = load_text(PROC)
    assert config.log_for("p") == LogConfig(target="file", max_bytes=50 << 20, backups=5)
    assert config.resources["p"].log_output is False  # type: ignore[union-attr]


def test_a_resource_log_table_overrides_the_defaults_key_by_key() -> None:
    """`log = { backups = 2 }` keeps `[defaults.log]`'s other keys."""
    config = load_text('[defaults.log]\nmax_bytes = "1m"\n' + PROC + "log = { backups = 2 }\n")
    assert config.log_for("p") == LogConfig(max_bytes=1 << 20, backups=2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            PROC + 'log = { max_bytes = "1k" }',
            "resources.p.log.max_bytes: must be between 4k and 1t (got 1k)",
        ),
        (
            PROC + "log = { backups = 101 }",
            "resources.p.log.backups: must be between 0 and 100 (got 101)",
        ),
        (
            PROC + 'log = { target = "syslog" }',
            "resources.p.log.target: Input should be 'file', 'memory' or 'journald'",
        ),
        (
            PROC + "log = { rotate = true }",
            "resources.p.log.rotate: unknown key (allowed: backups, max_bytes, target)",
        ),
        (
            '[defaults.log]\nmax_bytes = "lots"\n',
            "defaults.log.max_bytes: expected a size",
        ),
        ("[daemon]\nlog_dir = 3\n", "daemon.log_dir"),
    ],
)
def test_bad_log_settings_are_refused_with_their_key_path(text: str, expected: str) -> None:
    """Each bad key is named, with what is wrong with it."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_log_dir_defaults_to_logs_in_the_state_dir_or_systemds_logs_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside systemd the files go to STATE_DIR/logs; under it, to $LOGS_DIRECTORY."""
    monkeypatch.delenv("LOGS_DIRECTORY", raising=False)
    config = load_text(f'[daemon]\nstate_dir = "{tmp_path}"\n')
    assert config.daemon.log_path == tmp_path / "logs"
    monkeypatch.setenv("LOGS_DIRECTORY", "/var/log/supervisor-daemon")
    assert config.daemon.log_path == Path("/var/log/supervisor-daemon")
    explicit = load_text(f'[daemon]\nlog_dir = "{tmp_path}/out"\n')
    assert explicit.daemon.log_path == tmp_path / "out"


def test_a_changed_log_setting_restarts_the_resource_and_log_dir_the_daemon() -> None:
    """Output settings are fixed when a resource is built; log_dir when the daemon starts."""
    old = load_text(PROC)
    new = load_text('[daemon]\nlog_dir = "/tmp/elsewhere"\n[defaults.log]\nbackups = 1\n' + PROC)
    plan = plan_reload(old, new)
    assert plan.restarted == ("p",)
    assert "log_dir" in plan.daemon_restart_needed


CONTAINER = '[resources.c]\nkind = "container"\nimage = "img"\n'


def test_a_container_log_table_sets_the_engines_rotation_over_the_defaults() -> None:
    """A container's `log` takes max_bytes and backups over `[defaults.log]`; a change
    restarts it on reload (the engine's log options are fixed when it is created)."""
    old = load_text("[defaults.log]\nbackups = 1\n" + CONTAINER)
    new = load_text("[defaults.log]\nbackups = 1\n" + CONTAINER + 'log = { max_bytes = "8m" }\n')
    assert new.log_for("c") == LogConfig(max_bytes=8 << 20, backups=1)
    assert plan_reload(old, new).restarted == ("c",)


def test_a_container_log_table_has_no_target_the_engine_keeps_the_output() -> None:
    """`target` is refused on a container: its output is always the engine's json-file."""
    found = problems(CONTAINER + 'log = { target = "memory" }\n')
    assert any(
        p.startswith("resources.c.log.target: unknown key (allowed: backups, max_bytes)")
        for p in found
    ), found


def test_a_launched_deephaven_server_keeps_its_output_like_a_process() -> None:
    """A deephaven resource takes the process kind's `log` table and `log_output` (off)."""
    config = load_text(
        '[resources.dh]\nkind = "deephaven"\nlaunch = "python"\nlog = { backups = 0 }\n'
    )
    assert config.log_for("dh") == LogConfig(backups=0)
    assert config.resources["dh"].log_output is False  # type: ignore[union-attr]
