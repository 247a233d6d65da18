"""The Keras MLP program (784-128-10, Adam, fit then evaluate) through fdl's Python API.

Reads its hyperparameters from configs/keras_mlp.yaml but builds the run by
hand, the way a Keras user writes it: `fdl.data.load` (the built-in MNIST-1D,
or MNIST with `--mnist DIR`, a folder of the four IDX files), a stratified
validation split, `fdl.nn.models.mlp(hidden=[128])`, `fdl.fit`, then
`fdl.evaluate` on the test split, whose dict is printed.

    python experiments/keras_mlp.py
    python experiments/keras_mlp.py --mnist ~/data/mnist --set training.epochs=5
"""
from __future__ import annotations

import dataclasses
import time

import fdl
from fdl.config import load_config
from fdl.config.build import optimizer_arguments
from program import CONFIGS, config_overrides, data_description, parse_args

CONFIG = CONFIGS / "keras_mlp.yaml"


def main(argv=None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv, out=None)
    config = load_config(CONFIG, config_overrides(args))
    print(f"keras_mlp: on {data_description(args)}")
    start = time.perf_counter()
    dataset = fdl.data.load(config.data.name, config.data.path)
    if config.data.limit_train is not None:
        limit = config.data.limit_train
        dataset = dataclasses.replace(dataset, train=fdl.data.Split(dataset.train.x[:limit],
                                                                    dataset.train.y[:limit]))
    dataset = fdl.data.train_val_split(dataset, config.data.val_fraction, seed=config.seed)
    model = fdl.nn.models.mlp(hidden=list(config.model.args.hidden))
    state, _ = fdl.fit(model, dataset.train, val=dataset.val, loss=config.loss.name,
                       optimizer=optimizer_arguments(config.optimizer),
                       epochs=config.training.epochs, batch_size=config.training.batch_size,
                       metrics=list(config.metrics), seed=config.seed,
                       verbose=config.training.verbose)
    scores = fdl.evaluate(model, state, dataset.test, loss=config.loss.name, metrics=list(config.metrics))
    print(f"keras_mlp [{config.data.name}]: evaluate(test) = {scores}, {time.perf_counter() - start:.1f} s")
    return scores


if __name__ == "__main__":
    main()
