"""The PyTorch CNN program (conv 32 -> conv 64, 3x3, ReLU, 2x2 max-pool, fc 100, fc 10, SGD 0.01).

Trains configs/pytorch_cnn.yaml with `fdl.config.train_from_config`. With
`--mnist DIR` (a folder of the four IDX files) it trains the 2-D original, the
registered `cnn2d` model on (28, 28, 1) images. Without it, it trains on the
built-in MNIST-1D, where no 3x3 image convolution exists: the config's layers
are the 1-D analogue (Conv1D 32 -> Conv1D 64, kernel 3, MaxPool1D 2, fc 100, fc 10).

    python experiments/pytorch_cnn.py
    python experiments/pytorch_cnn.py --mnist ~/data/mnist --set training.epochs=2
"""
from __future__ import annotations

from program import CONFIGS, accuracy_scores, config_overrides, parse_args, run_config

CONFIG = CONFIGS / "pytorch_cnn.yaml"
# MNIST swaps the config's 1-D layers for the registered 2-D original.
MNIST_MODEL = ["model.name=cnn2d", "model.layers=null"]


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    data = "MNIST, 2-D CNN" if args.mnist else \
        "MNIST-1D (built in), the 1-D analogue Conv1D 32 -> Conv1D 64; pass --mnist DIR for the 2-D original"
    return run_config(CONFIG, config_overrides(args, MNIST_MODEL), "pytorch_cnn", f"on {data}",
                      accuracy_scores)


if __name__ == "__main__":
    main()
