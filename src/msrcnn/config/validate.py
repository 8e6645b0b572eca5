"""Checks a composed Hydra config against a typed schema before any work starts."""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException


class ConfigError(ValueError):
    """The configuration has an unknown key or a value outside its type or choices."""


def validate(cfg: DictConfig | dict, schema: type) -> DictConfig:
    """Merges ``cfg`` into the typed ``schema``; unknown keys and invalid values raise :class:`ConfigError`.

    The message names the full key, the offending value and, for choices, the valid ones, e.g.
    ``head.input: Invalid value 'concatt', expected one of [concat, multiply, concat_all, concat_highres]``.
    A misspelt key names the closest valid ones, and a mandatory value left unset (``???``) names the
    key and an example (:data:`EXAMPLES`).
    """
    base = OmegaConf.structured(schema)
    if isinstance(cfg, DictConfig):  # plain, so that keys a typed node took in (+key=...) are checked too
        cfg = OmegaConf.to_container(cfg, resolve=False)
    try:
        merged = OmegaConf.merge(base, cfg)
    except ConfigKeyError as err:
        raise ConfigError(unknown_key_message(schema, err.full_key)) from None
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        first_line = str(err).splitlines()[0]
        where = f"{key}: " if key else ""
        raise ConfigError(f"invalid configuration: {where}{first_line}") from None
    missing = sorted(OmegaConf.missing_keys(merged))
    if missing:
        raise ConfigError(missing_value_message(missing[0]))
    OmegaConf.set_struct(merged, True)
    return merged


def check_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuses command-line ``overrides`` that the validated ``cfg`` would ignore: ``head.*`` keys with
    ``head=none`` (a plain Mask R-CNN has no MaskIoU head to set)."""
    if cfg.head.name.value != "none":
        return
    ignored = [o.lstrip("+~") for o in overrides if o.lstrip("+~").startswith("head.")]
    if ignored:
        raise ConfigError(
            f"{ignored[0]} has no effect with head=none (a plain Mask R-CNN has no MaskIoU head): "
            "drop it, or use head=maskiou"
        )


def _schema_at(schema: type | None, path: list[str]) -> type | None:
    """The dataclass at ``path`` below ``schema`` (through ``Optional[...]``), None when there is none."""
    for name in path:
        if schema is None or not dataclasses.is_dataclass(schema):
            return None
        hints = typing.get_type_hints(schema)
        if name not in hints:
            return None
        hint = hints[name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        schema = args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint
    return schema if dataclasses.is_dataclass(schema) else None


def unknown_key_message(schema: type, full_key: str, root: str = "") -> str:
    """``unknown key 'head.inptu'; closest valid keys: head.input`` (difflib), or the valid keys there.

    ``full_key`` is relative to ``schema``, which sits at ``root`` (e.g. ``hydra.``) in the config.
    """
    *parent, name = str(full_key).split(".")
    node = _schema_at(schema, parent)
    full_key = root + str(full_key)
    if node is None:
        return f"unknown key '{full_key}'"
    parent = [p for p in root.split(".") if p] + parent
    prefix = "".join(f"{p}." for p in parent)
    valid = [f.name for f in dataclasses.fields(node) if not f.name.startswith("_")]
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if close:
        return f"unknown key '{full_key}'; closest valid keys: {', '.join(prefix + c for c in close)}"
    where = f"of {'.'.join(parent)}" if parent else "at the top level"
    return f"unknown key '{full_key}'; valid keys {where}: {', '.join(valid)}"


# Examples of the mandatory values (``???``) the scripts ask for, by key.
EXAMPLES = {
    "ckpt_path": "outputs/demo/<date>/checkpoints/last.ckpt",
    "input": "'imgs/*.jpg'",
    "root": "/data/coco",
}


def missing_value_message(full_key: str) -> str:
    """``missing mandatory value: ckpt_path (e.g. ckpt_path=...)``, the example from :data:`EXAMPLES`."""
    example = EXAMPLES.get(str(full_key).split(".")[-1], "...")
    return f"missing mandatory value: {full_key} (set it on the command line, e.g. {full_key}={example})"


def to_plain(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A plain ``dict`` with enums as strings (for model builders, checkpoints and loggers)."""
    return OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)
