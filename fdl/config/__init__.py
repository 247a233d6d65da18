"""fdl.config: YAML run configs -> typed dataclasses -> model, optimizer, loss, data, run.

Imports the library (nn, data, train, records); only the command imports it.
"""
from fdl.config.build import (build_augment, build_callbacks, build_data, build_layer, build_loss,
                              build_model, build_optimizer)
from fdl.config.load import ConfigError, check_keys, load_config, parse_overrides, to_yaml
from fdl.config.run import RunResult, evaluate_splits, load_run, resume_run, train_from_config
from fdl.config.schema import RunConfig

__all__ = [
    "ConfigError", "RunConfig", "RunResult", "load_config", "parse_overrides", "check_keys", "to_yaml",
    "build_augment", "build_callbacks", "build_data", "build_layer", "build_loss", "build_model",
    "build_optimizer", "train_from_config", "resume_run", "evaluate_splits", "load_run",
]
