"""fdl.config: YAML run configs -> typed dataclasses -> the built arguments of a run.

Imports the library (nn, data, losses, optim, train's callbacks); never fdl.runs
or fdl.cli. `build_arguments` is the one place a config becomes the model,
loss, optimizer, data and callbacks that `fdl train` and `fdl sweep` use.
"""
from fdl.config.arguments import RunArguments, build_arguments, check_model_fits_data, check_population_keys
from fdl.config.build import (PreparedData, build_augment, build_custom_callbacks, build_data, build_layer,
                              build_loss, build_model, build_optimizer, import_target, optimizer_arguments)
from fdl.config.load import ConfigError, check_keys, load_config, merge_config, parse_overrides, to_yaml
from fdl.config.schema import RunConfig, SweepConfig

__all__ = [
    "ConfigError", "RunConfig", "RunArguments", "PreparedData", "load_config", "parse_overrides",
    "check_keys", "to_yaml", "build_arguments", "check_model_fits_data", "check_population_keys", "build_augment", "build_data",
    "build_layer", "build_loss", "build_model", "build_optimizer", "optimizer_arguments",
    "build_custom_callbacks", "import_target", "merge_config", "SweepConfig",
]
