"""`backend = "swarm"` config: endpoints with their own TLS, and settings services cannot carry."""

from __future__ import annotations

import pytest

from supervisor.config.load import load_text
from supervisor.errors import ConfigError

BASE = """
[environments.pool]
backend = "swarm"
[environments.pool.swarm]
image = "sandbox:1"
manager = { host = "unix:///run/swarm/manager.sock" }
nodes = [
  { host = "unix:///run/swarm/manager.sock" },
  { host = "tcp://10.0.0.2:2376", tls = { cert = "/etc/c.pem", key = "/etc/k.pem", ca = "/etc/ca.pem" } },
]
"""


def test_every_endpoint_is_opened_once_with_its_own_tls() -> None:
    """The manager and each node are engines to open (each once); TLS is kept per host."""
    config = load_text(BASE)
    assert config.docker_hosts() == ["unix:///run/swarm/manager.sock", "tcp://10.0.0.2:2376"]
    tls = config.docker_tls()
    assert list(tls) == ["tcp://10.0.0.2:2376"]
    assert str(tls["tcp://10.0.0.2:2376"].ca) == "/etc/ca.pem"


@pytest.mark.parametrize(
    ("line", "key", "reason"),
    [
        ("no_new_privileges = true", "swarm.no_new_privileges", "cannot set no-new-privileges"),
        ('runtime = "runsc"', "swarm.runtime", "cannot choose a runtime"),
        ('network = "none"', "swarm.network", 'cannot join "none"'),
        ("nodes = []", "swarm.nodes", "at least 1"),
        ('constraints = ["node.role"]', "swarm.constraints.0", "placement constraint such as"),
    ],
)
def test_settings_a_service_cannot_enforce_are_refused_with_their_key(
    line: str, key: str, reason: str
) -> None:
    """What a 20.10 service cannot carry is refused at its own key, never dropped."""
    text = BASE.replace('image = "sandbox:1"', f'image = "sandbox:1"\n{line}')
    if line.startswith("nodes"):
        text = BASE[: BASE.index("nodes = [\n")] + line + "\n"
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert f"environments.pool.{key}" in str(caught.value)
    assert reason in str(caught.value)


def test_a_swarm_table_belongs_to_the_swarm_backend_only() -> None:
    """backend "swarm" needs its table, and another backend refuses one."""
    with pytest.raises(ConfigError, match='backend "swarm" needs a \\[swarm\\] table'):
        load_text('[environments.pool]\nbackend = "swarm"\n')
    with pytest.raises(ConfigError, match="only it takes one"):
        load_text(BASE.replace('backend = "swarm"', 'backend = "process"'))


def test_tls_on_a_unix_socket_is_refused() -> None:
    """TLS is for tcp:// engines; on a unix socket it is a mistake, not ignored."""
    text = BASE.replace(
        '{ host = "unix:///run/swarm/manager.sock" },',
        '{ host = "unix:///run/swarm/manager.sock", tls = { cert = "/c", key = "/k" } },',
    )
    with pytest.raises(ConfigError, match="tls applies to a tcp://"):
        load_text(text)


def test_two_environments_naming_one_engine_with_different_tls_are_refused() -> None:
    """The daemon opens one client per engine host: a second environment naming the same
    host with other TLS is refused at its key, and with the same TLS it is accepted."""
    second = BASE.replace("[environments.pool]", "[environments.other]").replace(
        "[environments.pool.swarm]", "[environments.other.swarm]"
    )
    load_text(BASE + second)  # the same TLS: one engine, shared
    other = second.replace('key = "/etc/k.pem"', 'key = "/etc/other-key.pem"')
    with pytest.raises(ConfigError) as caught:
        load_text(BASE + other)
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "environments.other.swarm.nodes.1.tls: engine tcp://10.0.0.2:2376 is also named at "
        "environments.pool.swarm.nodes.1 with different tls; one engine takes one client "
        "TLS: make them equal"
    ]
