"""The Keras LSTM program (LSTM(50) -> Dense(1) logit, binary cross-entropy, Adam, accuracy).

Trains configs/keras_lstm.yaml with `fdl.config.train_from_config` on the
built-in MNIST-1D read as 40-step sequences of one feature, digit 0 against the
other nine. (No --mnist: 784 one-pixel steps are not the program's sequences.)

    python experiments/keras_lstm.py
    python experiments/keras_lstm.py --set training.epochs=5
"""
from __future__ import annotations

from program import CONFIGS, config_overrides, parse_args, run_config

CONFIG = CONFIGS / "keras_lstm.yaml"


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv, mnist=False)
    data = "MNIST-1D (built in) as 40-step sequences of 1 feature"
    return run_config(CONFIG, config_overrides(args), "keras_lstm",
                      lambda config: f"digit {config.data.positive_class} vs rest on {data}")


if __name__ == "__main__":
    main()
