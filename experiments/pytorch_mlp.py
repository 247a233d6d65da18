"""The PyTorch MLP program (784-128-10, Adam, cross-entropy, test accuracy) through the config path.

Trains configs/pytorch_mlp.yaml with `fdl.config.train_from_config`: on MNIST when
`--mnist DIR` names a folder of the four IDX files, otherwise on the built-in
MNIST-1D (where the MLP is 40-128-10).

    python experiments/pytorch_mlp.py
    python experiments/pytorch_mlp.py --mnist ~/data/mnist --set training.epochs=5
"""
from __future__ import annotations

from program import CONFIGS, accuracy_scores, config_overrides, data_description, parse_args, run_config

CONFIG = CONFIGS / "pytorch_mlp.yaml"


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    return run_config(CONFIG, config_overrides(args), "pytorch_mlp",
                      f"MLP 784-128-10 program on {data_description(args)}", accuracy_scores)


if __name__ == "__main__":
    main()
