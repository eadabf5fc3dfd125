"""The variables a config names as secret sources, which no child may inherit."""

from __future__ import annotations

from supervisor.config.load import load_text

CONFIG = """
[resources.dh]
kind = "deephaven"
port = 10000
auth = "psk"
token_env = "DH_PSK"

[resources.ent]
kind = "deephaven-enterprise"
connection_json_url = "https://dh.example/iris/connection.json"
auth = "password"
username = "me"
password_env = "ENT_PASSWORD"

[resources.web]
kind = "process"
command = ["true"]
env = { NOT_A_SOURCE = "x" }
"""


def test_every_token_env_and_password_env_is_found() -> None:
    assert load_text(CONFIG).secret_env_names() == {"DH_PSK", "ENT_PASSWORD"}


def test_a_config_without_sources_names_none() -> None:
    assert (
        load_text('[resources.w]\nkind = "process"\ncommand = ["true"]\n').secret_env_names()
        == set()
    )
