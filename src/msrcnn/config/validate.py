"""Checks a composed Hydra config against :mod:`msrcnn.config.schema` before any work starts."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from msrcnn.config.schema import Config


class ConfigError(ValueError):
    """The configuration has an unknown key or a value outside its type or choices."""


def validate(cfg: DictConfig | dict, schema: type = Config) -> DictConfig:
    """Merges ``cfg`` into the typed ``schema``; unknown keys and invalid values raise :class:`ConfigError`.

    The message names the full key, the offending value and, for choices, the valid ones, e.g.
    ``head.input: Invalid value 'concatt', expected one of [concat, multiply, concat_all, concat_highres]``.
    """
    base = OmegaConf.structured(schema)
    try:
        merged = OmegaConf.merge(base, cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        first_line = str(err).splitlines()[0]
        where = f"{key}: " if key else ""
        raise ConfigError(f"invalid configuration: {where}{first_line}") from None
    OmegaConf.set_struct(merged, True)
    return merged


def to_plain(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """A plain ``dict`` with enums as strings (for model builders, checkpoints and loggers)."""
    return OmegaConf.to_container(cfg, resolve=resolve, enum_to_str=True)
