"""Configuration: typed schemas for ``conf/`` and their validation.

Importing it registers the schemas that config groups compose onto with Hydra's ConfigStore
(:func:`register_schemas`).
"""

from msrcnn.config.schema import Config, EvalAppConfig, register_schemas
from msrcnn.config.validate import ConfigError, to_plain, validate

register_schemas()

__all__ = ["Config", "EvalAppConfig", "ConfigError", "register_schemas", "to_plain", "validate"]
