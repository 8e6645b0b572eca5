"""Configuration machinery: validating a composed Hydra config against a typed schema (one-line errors
naming the key, the value and the valid choices), schemas derived from the code they configure, and the
schemas of the settings groups that configure no model code.

It imports no model code: the groups that mirror a builder, and each entry point's schema, are derived in
:mod:`msrcnn.app.schemas` (importing that registers them with Hydra's ConfigStore).
"""

from msrcnn.config.validate import ConfigError, to_plain, validate

__all__ = ["ConfigError", "to_plain", "validate"]
