"""The config's numeric ranges as a README table, walked from the models themselves.

`python -m supervisor.config.reference` prints the table; a test checks that the README
carries exactly this text, so the documented ranges cannot drift from the checked ones.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from supervisor.config.schema import Config
from supervisor.config.types import Range


@dataclass(frozen=True, slots=True)
class Bounded:
    """One numeric field: where it is, what it applies to, its default and its range."""

    path: str
    applies_to: str
    default: Any
    range: Range


def ranges_of(annotation: Any) -> list[Range]:
    """The Range markers on an annotation's outer layers (through `X | None`)."""
    found: list[Range] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        found += [m for m in metadata if isinstance(m, Range)]
        found += ranges_of(base)
    elif origin in (typing.Union, types.UnionType, list, dict):
        for arg in typing.get_args(annotation):
            found += ranges_of(arg)
    return found


def numeric_leaves(annotation: Any, ranged: bool = False) -> Iterator[tuple[Any, bool]]:
    """Every int or float an annotation can hold, with whether a Range covers it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        covered = ranged or any(isinstance(m, Range) for m in metadata)
        yield from numeric_leaves(base, covered)
    elif origin in (typing.Union, types.UnionType, list, dict, tuple):
        for arg in typing.get_args(annotation):
            yield from numeric_leaves(arg, ranged)
    elif annotation in (int, float):
        yield annotation, ranged


def models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    """The models an annotation can hold, through unions, lists and dicts."""
    origin = typing.get_origin(annotation)
    if origin is not None:
        for arg in typing.get_args(annotation):
            yield from models_in(arg)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation


def fields_of(
    model: type[BaseModel], prefix: str = "", applies_to: str = ""
) -> Iterator[tuple[str, str, FieldInfo]]:
    """(dotted path, kind it applies to, field) for every field under `model`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path, applies_to, field
        annotation = field.annotation
        dict_of = typing.get_origin(unwrap(annotation)) is dict
        list_of = typing.get_origin(unwrap(annotation)) is list
        for sub in models_in(annotation):
            kind_field = sub.model_fields.get("kind")
            kind = applies_to
            if kind_field is not None:
                kind = " ".join(str(k) for k in typing.get_args(kind_field.annotation))
            step = f"{path}.NAME." if dict_of else f"{path}[]." if list_of else f"{path}."
            yield from fields_of(sub, step, kind)


def unwrap(annotation: Any) -> Any:
    """Strip Annotated[...] and `X | None` down to the model or container type."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation
            annotation = args[0]
        else:
            return annotation


def bounded_fields() -> list[Bounded]:
    """Every field with a range, once (a resource's `restart` and `log` repeat the defaults)."""
    rows = []
    for path, applies_to, field in fields_of(Config):
        if path.startswith("resources.") and (".restart." in path or ".log." in path):
            continue
        for found in ranges_of(field.annotation) or [
            m for m in field.metadata if isinstance(m, Range)
        ]:
            rows.append(Bounded(path, applies_to, field.default, found))
    return rows


def table() -> str:
    """The README table: key, what it applies to, default and range."""
    merged: dict[tuple[str, str, str], list[str]] = {}
    for row in bounded_fields():
        default = "unset" if row.default is None else row.range.show(row.default)
        key = (row.path, default, row.range.describe())
        merged.setdefault(key, [])
        if row.applies_to and row.applies_to not in merged[key]:
            merged[key].append(row.applies_to)
    lines = ["| key | kind | default | range |", "|---|---|---|---|"]
    for (path, default, described), kinds in merged.items():
        lines.append(f"| `{path}` | {', '.join(kinds) or '-'} | {default} | {described} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
