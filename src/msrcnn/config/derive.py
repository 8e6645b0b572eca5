"""Schemas derived from the code they configure: a config group's keys, types and defaults are read
from the signature (or dataclass) of what it builds, so that every default is stated once, in the code.

:func:`schema_of` turns parameters into an OmegaConf-ready dataclass: simple types, ``X | None``,
lists and tuples (as lists) are checked; a key with choices gets an Enum of :func:`choices` (so a value
outside them fails with OmegaConf's message listing the valid ones); anything else takes any value.
``msrcnn.config.trainer`` derives ``lightning.Trainer``'s group the same way.
Nothing here imports the code it derives from: the application passes it in
(:mod:`msrcnn.app.schemas`).
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any, Optional, Union

from omegaconf import MISSING

_SIMPLE = (int, float, bool, str)


def choices(name: str, values: Sequence[str]) -> type[Enum]:
    """An Enum of the strings ``values`` (each member's name and value the string itself)."""
    return Enum(name, {value: value for value in values}, type=str)  # type: ignore[return-value]


def omegaconf_type(hint: Any) -> Any:
    """The type OmegaConf checks a value against for the annotation ``hint`` (``Any`` where it cannot)."""
    if hint in _SIMPLE or (isinstance(hint, type) and issubclass(hint, Enum)):
        return hint
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = omegaconf_type(rest[0]) if len(rest) == 1 else Any
        return Optional[inner] if inner is not Any and len(rest) < len(args) else Any  # noqa: UP045
    if origin in (list, tuple, Sequence, typing.Sequence):
        item = omegaconf_type(args[0]) if args else Any
        return list[item]  # type: ignore[valid-type]
    return Any


def parameters_of(source: Callable | type) -> dict[str, inspect.Parameter]:
    """The keyword parameters of a function, or the fields of a dataclass, with their annotations resolved."""
    if dataclasses.is_dataclass(source):
        hints = typing.get_type_hints(source)
        return {
            f.name: inspect.Parameter(
                f.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=f.default if f.default is not dataclasses.MISSING else inspect.Parameter.empty,
                annotation=hints[f.name],
            )
            for f in dataclasses.fields(source)
        }
    hints = typing.get_type_hints(source)
    return {
        name: param.replace(annotation=hints.get(name, inspect.Parameter.empty))
        for name, param in inspect.signature(source).parameters.items()
        if name != "self" and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    }


def _field(name: str, param: inspect.Parameter, kind: Any) -> tuple[str, Any, Any]:
    default = param.default
    if default is inspect.Parameter.empty:
        return name, kind, dataclasses.field(default=MISSING)
    enum = typing.get_args(kind)[0] if typing.get_origin(kind) is Union else kind
    if isinstance(enum, type) and issubclass(enum, Enum) and default is not None:
        default = enum(default)
    if isinstance(default, (list, tuple)):
        value = list(default)
        return name, kind, dataclasses.field(default_factory=lambda: list(value))
    return name, kind, dataclasses.field(default=default)


def schema_of(
    name: str,
    parameters: Mapping[str, inspect.Parameter],
    *,
    types_of: Mapping[str, Any] | None = None,
    lead: Sequence[tuple[str, Any, Any]] = (),
    doc: str = "",
) -> type:
    """A dataclass schema ``name`` with one field per parameter: its default, its type from the annotation
    (:func:`omegaconf_type`), or from the default's type where there is none. ``types_of`` sets a
    field's type (an Enum of :func:`choices` for a key with choices; a nested schema's field then
    defaults to that schema's defaults; a scalar default becomes a one-item list for a ``list`` type);
    ``lead``: the group's own fields, first (``(name, type, dataclasses.field(...))``)."""
    types_of = dict(types_of or {})
    fields = list(lead)
    for key, param in parameters.items():
        if key in types_of:
            kind = types_of[key]
            if dataclasses.is_dataclass(kind):
                fields.append((key, kind, dataclasses.field(default_factory=kind)))
                continue
            if typing.get_origin(kind) is list and isinstance(param.default, _SIMPLE):
                param = param.replace(default=[param.default])
        elif param.annotation is not inspect.Parameter.empty:
            kind = omegaconf_type(param.annotation)
        elif param.default is not inspect.Parameter.empty and param.default is not None:
            kind = type(param.default)
        else:
            kind = Any
        fields.append(_field(key, param, kind))
    cls = dataclasses.make_dataclass(name, fields)
    cls.__doc__ = doc or f"The config group of {name} (fields and defaults derived from the code)."
    return cls
