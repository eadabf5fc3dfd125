"""What a container resource asks its engine for: the output rotation and the adoption key."""

from __future__ import annotations

from supervisor.config.container import ContainerConfig
from supervisor.config.output import LogConfig
from supervisor.resources.container import ContainerResource

CONFIG = ContainerConfig(kind="container", image="img")


def resource(log: LogConfig | None = None) -> ContainerResource:
    return ContainerResource("c", CONFIG, engine=None, log=log)  # type: ignore[arg-type]


def test_log_settings_become_json_file_max_size_and_max_file() -> None:
    """`max_bytes` is the engine's max-size and `backups` + 1 its max-file."""
    spec = resource(LogConfig(max_bytes=1 << 20, backups=0)).spec()
    assert spec.log_config() == {
        "Type": "json-file",
        "Config": {"max-size": "1048576", "max-file": "1"},
    }


def test_default_log_settings_keep_the_fingerprint_of_containers_made_before_them() -> None:
    """With the default rotation the adoption key is the config's alone; another one changes it."""
    assert resource().fingerprint() == CONFIG.fingerprint()
    assert resource(LogConfig(backups=2)).fingerprint() != CONFIG.fingerprint()
