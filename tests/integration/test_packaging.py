"""The wheel alone, in a clean venv: it carries its licence and runs the embedded default."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import trio

from tests.integration.test_default_config import fresh_env, running_daemon, wait_for_states

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def run(*argv: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", out, REPO)
    (built,) = out.glob("supervisor_daemon-*.whl")
    return built


@pytest.fixture(scope="module")
def clean_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv with the wheel and its dependencies only (no extras: no docker, no Java)."""
    venv = tmp_path_factory.mktemp("venv")
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", wheel)
    return venv


def test_the_wheel_carries_the_licence_and_the_embedded_default(wheel: Path) -> None:
    """Apache-2.0: the text in dist-info, the SPDX expression in the metadata."""
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(meta).decode()
        licence = next(n for n in names if n.endswith("/LICENSE") and ".dist-info/" in n)
        assert "Apache License" in zf.read(licence).decode()
    assert "License-Expression: Apache-2.0" in metadata
    assert "supervisor/config/default.toml" in names
    assert "Provides-Extra: docker" in metadata
    assert "Provides-Extra: enterprise" not in metadata  # an empty extra promised nothing


def test_the_wheel_carries_the_web_console(wheel: Path) -> None:
    """The console's page, modules and CSS are package data: served from the wheel."""
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    for name in ("index.html", "app.js", "api.js", "console.css", "environments.js"):
        assert f"supervisor/api/static/{name}" in names


def test_the_wheel_alone_runs_the_embedded_default(clean_venv: Path, tmp_path: Path) -> None:
    """`pip install` of the wheel, then `supervisor run`: web and heartbeat come up."""
    env = fresh_env(tmp_path)
    env["PATH"] = f"{clean_venv / 'bin'}:{env['PATH']}"
    env.pop("PYTHONPATH", None)

    async def main() -> None:
        async with running_daemon([str(clean_venv / "bin" / "supervisor"), "run"], env):
            await wait_for_states(
                env, lambda s: s.get("heartbeat", ("",))[0] == "RUNNING", within=60
            )

    trio.run(main)


def test_without_the_docker_extra_a_container_config_is_refused_naming_the_extra(
    clean_venv: Path, tmp_path: Path
) -> None:
    """The docker SDK is an extra now: `check` says which one to install."""
    config = tmp_path / "box.toml"
    config.write_text('[resources.box]\nkind = "container"\nimage = "debian:bookworm"\n')
    done = subprocess.run(
        [clean_venv / "bin" / "supervisor", "check", "-c", config],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "resources.box: uses Docker" in done.stderr
    assert "pip install 'supervisor-daemon[docker]'" in done.stderr
