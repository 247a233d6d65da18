"""The Keras binary classifier (Dense 10 relu -> Dense 10 relu -> Dense 1, binary cross-entropy, Adam).

Trains configs/keras_binary.yaml with `fdl.config.train_from_config`: digit 0
against the other nine, on the built-in MNIST-1D or, with `--mnist DIR` (a
folder of the four IDX files), on MNIST. The last layer outputs a logit; the
sigmoid lives in fdl's binary_cross_entropy and in the metrics.

    python experiments/keras_binary_classifier.py
    python experiments/keras_binary_classifier.py --mnist ~/data/mnist
"""
from __future__ import annotations

from program import CONFIGS, config_overrides, data_description, parse_args, run_config

CONFIG = CONFIGS / "keras_binary.yaml"


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    data = data_description(args)
    return run_config(CONFIG, config_overrides(args), "keras_binary",
                      lambda config: f"digit {config.data.positive_class} vs rest on {data}")


if __name__ == "__main__":
    main()
