"""Configuration: typed schemas for ``conf/`` and their validation."""

from msrcnn.config.schema import Config, EvalAppConfig
from msrcnn.config.validate import ConfigError, to_plain, validate

__all__ = ["Config", "EvalAppConfig", "ConfigError", "to_plain", "validate"]
