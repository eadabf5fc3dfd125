"""Instances and groups: what `instances = N` and `[groups]` become, and what `check` refuses."""

from __future__ import annotations

import pytest

from supervisor.config.load import load_text
from supervisor.config.schema import ProcessConfig
from supervisor.errors import ConfigError

WEB = '[resources.web]\nkind = "process"\ncommand = ["serve", "--port", "80{instance}"]\n'
DB = '[resources.db]\nkind = "process"\ncommand = ["db"]\n'


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_text(text)
    return [str(p) for p in info.value.problems]


def test_instances_become_resources_named_name_colon_index() -> None:
    """`instances = 3` makes web:0, web:1 and web:2, in place of web."""
    config = load_text(WEB + "instances = 3\n" + DB)
    assert list(config.resources) == ["web:0", "web:1", "web:2", "db"]


def test_each_instance_has_its_index_in_its_command_and_environment() -> None:
    """`{instance}` in the arguments becomes the index; SUPERVISOR_INSTANCE carries it too."""
    config = load_text(WEB + 'instances = 2\nenv = { A = "1" }\n')
    second = config.resources["web:1"]
    assert isinstance(second, ProcessConfig)
    assert second.command == ["serve", "--port", "801"]
    assert second.env == {"A": "1", "SUPERVISOR_INSTANCE": "1"}
    assert second.instances is None


def test_without_instances_the_command_is_left_as_written() -> None:
    """A resource without `instances` keeps its name and a literal `{instance}`."""
    config = load_text(WEB)
    web = config.resources["web"]
    assert isinstance(web, ProcessConfig)
    assert web.command[-1] == "80{instance}"


def test_depending_on_a_resource_with_instances_means_all_of_them() -> None:
    """`depends_on = ["web"]` waits for every instance of web."""
    config = load_text(WEB + "instances = 2\n" + DB + 'depends_on = ["web"]\n')
    assert config.resources["db"].depends_on == ["web:0", "web:1"]
    assert config.start_order() == ["web:0", "web:1", "db"]


def test_adding_an_instance_leaves_the_others_unchanged_for_a_reload() -> None:
    """Going from 2 to 3 instances changes nothing in web:0 and web:1 (a reload adds web:2)."""
    two, three = load_text(WEB + "instances = 2\n"), load_text(WEB + "instances = 3\n")
    assert two.resources["web:0"] == three.resources["web:0"]
    assert two.resources["web:1"] == three.resources["web:1"]


@pytest.mark.parametrize("count", [0, 1001])
def test_instances_out_of_range_are_refused_with_the_range(count: int) -> None:
    """`instances` is between 1 and 1000."""
    found = problems(WEB + f"instances = {count}\n")
    assert found == [f"resources.web.instances: must be between 1 and 1000 (got {count})"]


def test_groups_list_their_members_with_instances_spelled_out() -> None:
    """A member `web` stands for all of web's instances; `web:1` for one."""
    config = load_text(
        WEB + "instances = 2\n" + DB + '[groups]\nall_web = ["web"]\nmixed = ["web:1", "db"]\n'
    )
    assert config.groups == {"all_web": ["web:0", "web:1"], "mixed": ["web:1", "db"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (DB + '[groups]\nfront = ["dbx"]\n', "groups.front.0: no resource named 'dbx' (known: db)"),
        (DB + '[groups]\ndb = ["db"]\n', "groups.db: a resource is already named 'db'"),
        (DB + '[groups]\nall = ["db"]\n', "groups.all: 'all' is reserved"),
        (
            '[resources.all]\nkind = "process"\ncommand = ["x"]\n',
            "resources.all: 'all' is reserved",
        ),
        (DB + '[groups]\ng = ["db:0"]\n', "groups.g.0: 'db' has no `instances`"),
        (WEB + 'instances = 2\n[groups]\ng = ["web:2"]\n', "groups.g.0: 'web' has 2 instances"),
        (DB + '[groups]\ng = ["db:x"]\n', "groups.g.0: String should match pattern"),
    ],
)
def test_check_refuses_bad_groups_with_the_key_path(text: str, expected: str) -> None:
    """Unknown members, a group named like a resource, and `all` are refused with the key."""
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found
