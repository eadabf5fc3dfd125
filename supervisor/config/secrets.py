"""Which environment variables of the daemon hold secrets, found from the config models.

A field marked `SecretSource` (`token_env`, `password_env`) names a variable the daemon
reads; no child may inherit it (the launcher withholds them all).
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel

from supervisor.config.types import SecretSource


def _metadata(annotation: Any) -> list[Any]:
    """The Annotated metadata of `annotation` and of the members of a union (`X | None`)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *metadata = typing.get_args(annotation)
        return [*metadata, *_metadata(base)]
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _metadata(arg)]
    return []


@functools.cache
def _secret_fields(model: type[BaseModel]) -> tuple[frozenset[str], tuple[str, ...]]:
    """The fields of `model` marked `SecretSource`, and the others (once per class: the
    type walk is what costs, and a reload of 1,000 resources would do it for each)."""
    marked: set[str] = set()
    for name, field in model.model_fields.items():
        metadata = [*field.metadata, *_metadata(field.annotation)]
        if any(isinstance(m, SecretSource) for m in metadata):
            marked.add(name)
    return frozenset(marked), tuple(n for n in model.model_fields if n not in marked)


def secret_env_names(model: BaseModel) -> set[str]:
    """The variables named by `SecretSource` fields of `model` and the models inside it."""
    found: set[str] = set()
    marked, others = _secret_fields(type(model))
    for name in marked:
        value = getattr(model, name)
        if isinstance(value, str):
            found.add(value)
    for name in others:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            found |= secret_env_names(value)
        elif isinstance(value, dict):
            for item in value.values():
                if isinstance(item, BaseModel):
                    found |= secret_env_names(item)
    return found
