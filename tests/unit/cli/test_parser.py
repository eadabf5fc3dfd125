"""The command line's grammar: signal names, patterns, exit codes and completion scripts."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from supervisor.cli import main, parse


@pytest.mark.parametrize(
    ("given", "sent"), [("hup", "SIGHUP"), ("SIGUSR1", "SIGUSR1"), ("15", "SIGTERM")]
)
def test_signal_names_and_numbers_are_normalised(given: str, sent: str) -> None:
    """`signal NAME SIG` takes HUP, SIGUSR1 or a number, and sends the canonical name."""
    assert parse(["signal", "web", given]).signal == sent


@pytest.mark.parametrize("bad", ["NOPE", "999"])
def test_an_unknown_signal_is_a_usage_error(bad: str) -> None:
    """A typo in the signal exits 2 before any request."""
    with pytest.raises(SystemExit) as info:
        parse(["signal", "web", bad])
    assert info.value.code == 2


def test_verbs_take_several_names_and_wait_by_default() -> None:
    """start/stop/restart take NAME..., wait 60s by default, and --no-wait skips it."""
    args = parse(["restart", "web:*", "db"])
    assert (args.names, args.timeout, args.no_wait) == (["web:*", "db"], "60s", False)
    assert parse(["stop", "all", "--no-wait"]).no_wait


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_cover_the_verbs(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`completion bash|zsh` prints a script generated from the parser, verbs and flags included."""
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    for word in ("status", "signal", "pid", "--no-wait", "completion"):
        assert word in script


def test_the_bash_completion_script_parses(capsys: pytest.CaptureFixture[str]) -> None:
    """bash -n accepts the generated script (sourcing it would not fail)."""
    main(["completion", "bash"])
    bash = shutil.which("bash")
    assert bash is not None
    checked = subprocess.run([bash, "-n"], input=capsys.readouterr().out, text=True, check=False)
    assert checked.returncode == 0
