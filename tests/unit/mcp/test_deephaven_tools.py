"""The helper scripts the Deephaven tools send, run here against a stand-in `Table`."""

from __future__ import annotations

import contextlib
import io
import json
import sys
import types
from collections.abc import Iterator
from typing import Any

import pytest

from supervisor.mcp.deephaven_tools import DATA, PIP, SCHEMA, TABLES, helper


class Column:
    def __init__(self, name: str, data_type: str) -> None:
        self.name = name
        self.data_type = data_type


class Table:
    """Just what the helpers use of deephaven.table.Table."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.columns = [Column(k, type(v).__name__) for k, v in rows[0].items()]
        self.size = len(rows)
        self.is_refreshing = False

    def head(self, n: int) -> Table:
        return Table(self.rows[:n])

    def iter_dict(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)


@pytest.fixture
def scope(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A console scope with one table and one other name; `deephaven.table` stood in."""
    module = types.ModuleType("deephaven.table")
    module.Table = Table  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "deephaven", types.ModuleType("deephaven"))
    monkeypatch.setitem(sys.modules, "deephaven.table", module)
    return {"t": Table([{"X": 0, "S": "a"}, {"X": 1, "S": "b"}]), "n": 3}


def run(script: str, scope: dict[str, Any]) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(script, scope)  # noqa: S102  # the script is the product's own helper
    return json.loads(out.getvalue().strip().splitlines()[-1])


def test_helpers_leave_no_name_in_the_scope(scope: dict[str, Any]) -> None:
    """A helper runs in a function that deletes itself: the agent's scope is unchanged."""
    before = set(scope) | {"__builtins__"}
    assert run(helper(TABLES), scope) == ["t"]
    assert set(scope) == before


def test_schema_and_rows_of_a_table(scope: dict[str, Any]) -> None:
    """The schema lists columns and size; data gives the first rows; unknown names say so."""
    schema = run(helper(SCHEMA.format(names=["t", "ghost"])), scope)
    assert schema == [
        {
            "table": "t",
            "columns": [{"name": "X", "type": "int"}, {"name": "S", "type": "str"}],
            "size": 2,
        },
        {"table": "ghost", "error": "no table of that name"},
    ]
    data = run(helper(DATA.format(name="t", rows=1)), scope)
    assert data == {"rows": [{"X": 0, "S": "a"}], "size": 2, "is_refreshing": False}


def test_pip_list_names_installed_packages(scope: dict[str, Any]) -> None:
    """The package list is (name, version) pairs of the interpreter running it."""
    packages = run(helper(PIP), scope)
    assert {"package": "pytest", "version": pytest.__version__} in packages
