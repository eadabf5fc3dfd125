"""Reload plans across every kind: what restarts, what changes in place, what follows what."""

from __future__ import annotations

import pytest

from supervisor.config.diff import plan_reload
from supervisor.config.load import load_text
from supervisor.errors import ConfigError

FACTORY = """
[resources.prod]
kind = "deephaven-enterprise"
connection_json_url = "https://dh.example.com/iris/connection.json"
auth = "password"
username = "ops"
password_env = "DH_PASSWORD"
[resources.pq]
kind = "deephaven-enterprise"
factory = "prod"
pq_name = "live-feed"
"""

CONTAINER = """
[resources.cache]
kind = "container"
image = "redis:7"
"""

POOL = """
[environments.box]
backend = "process"
min_ready = 1
max_size = 4
"""


def test_a_rebuilt_enterprise_factory_rebuilds_its_sessions_after_it() -> None:
    """Sessions hold their factory: a factory restart restarts them too, factory first."""
    old = load_text(FACTORY)
    new = load_text(FACTORY.replace('username = "ops"', 'username = "ops2"'))
    assert plan_reload(old, new).restarted == ("prod", "pq")


def test_an_enterprise_session_change_alone_restarts_only_it() -> None:
    old = load_text(FACTORY)
    new = load_text(FACTORY.replace("live-feed", "other-feed"))
    plan = plan_reload(old, new)
    assert plan.restarted == ("pq",)
    assert plan.unchanged == ("prod",)


def test_factory_must_name_a_factory() -> None:
    """`factory` pointing at a resource that is not an Enterprise factory is refused."""
    text = CONTAINER + FACTORY.replace('factory = "prod"', 'factory = "cache"')
    with pytest.raises(ConfigError) as caught:
        load_text(text)
    assert any(p.path == "resources.pq.factory" for p in caught.value.problems)


def test_container_image_restarts_but_its_health_check_changes_in_place() -> None:
    old = load_text(CONTAINER)
    assert plan_reload(old, load_text(CONTAINER.replace("redis:7", "redis:8"))).restarted == (
        "cache",
    )
    probe = CONTAINER + 'health = { exec = ["redis-cli", "ping"] }\n'
    assert plan_reload(old, load_text(probe)).updated == ("cache",)


def test_pool_sizes_resize_in_place_and_a_new_backend_recreates() -> None:
    old = load_text(POOL)
    resized = plan_reload(old, load_text(POOL.replace("max_size = 4", "max_size = 6")))
    assert resized.environments.resized == ("box",)
    features = POOL + '[[environments.box.features]]\nkind = "command"\nsetup = ["true"]\n'
    assert plan_reload(old, load_text(features)).environments.recreated == ("box",)
    assert plan_reload(old, load_text("")).environments.removed == ("box",)
    assert plan_reload(load_text(""), old).environments.added == ("box",)


@pytest.mark.parametrize(
    "change",
    [
        'network = "host"\n',
        'isolation = "none"\n',
        "uids = { first = 2000000000 }\n",
        'cgroup = { memory = "2g" }\n',
    ],
)
def test_an_isolation_change_recreates_the_environment(change: str) -> None:
    """Namespaces, network, uids and cgroup caps shape every sandbox: a change rebuilds."""
    plan = plan_reload(load_text(POOL), load_text(POOL + change))
    assert plan.environments.recreated == ("box",)


def test_a_container_stop_signal_change_needs_a_new_container() -> None:
    """A container's stop signal is fixed at creation: changing it restarts it."""
    old = load_text(CONTAINER)
    new = load_text(CONTAINER + 'stop_signal = "INT"\n')
    assert plan_reload(old, new).restarted == ("cache",)


@pytest.mark.parametrize("host", ["tcp://10.0.0.5:abc", "tcp://:2376", "ftp://engine"])
def test_a_docker_host_must_be_an_engine_url(host: str) -> None:
    """A bad docker_host is refused at load (it used to surface at start-up)."""
    with pytest.raises(ConfigError) as caught:
        load_text(CONTAINER + f'docker_host = "{host}"\n')
    assert caught.value.problems[0].path == "resources.cache.docker_host"
