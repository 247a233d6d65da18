"""configs/gpt_small.yaml and configs/resnet18.yaml load, build, and hold the recipes their headers promise."""
from __future__ import annotations

import math
from pathlib import Path

import jax
import numpy as np
import pytest

from fdl.config import load_config
from fdl.config.arguments import build_arguments
from fdl.config.build import build_optimizer
from fdl.nn import summary

CONFIGS = Path(__file__).parents[2] / "configs"
CORPUS = Path("/usr/share/common-licenses")


def parameters(model, input_shape) -> int:
    params = jax.eval_shape(lambda key: model.init(key, tuple(input_shape))[1], jax.random.key(0))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


@pytest.mark.skipif(not CORPUS.is_dir(), reason="the licence corpus of Debian's base-files is missing")
def test_gpt_small_builds_the_6_by_384_model_over_256_bytes():
    config = load_config(CONFIGS / "gpt_small.yaml")
    arguments = build_arguments(config)
    shape = arguments.data.dataset.feature_shape
    assert tuple(shape) == (256,) and config.model.args.context == 256
    assert (config.model.args.depth, config.model.args.width, config.model.args.heads) == (6, 384, 6)
    table = summary(arguments.model, shape)  # what `fdl summary configs/gpt_small.yaml` prints
    assert table.endswith("GPT: input (256,) -> output (256, 256), total params 10,844,160"), table
    assert config.objective.name == "masked_sequence_cross_entropy"  # char_gpt.yaml's, inherited
    steps_per_epoch = arguments.data.dataset.train.x["tokens"].shape[0] // config.training.batch_size
    schedule = config.optimizer.schedule
    assert schedule.decay_steps == config.training.epochs * steps_per_epoch, steps_per_epoch
    build_optimizer(config.optimizer)


def test_resnet18_builds_over_an_npz_of_32x32x3_images(tmp_path):
    path = tmp_path / "images.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), y=np.arange(20) % 10,
             x_test=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8), y_test=np.arange(10))
    config = load_config(CONFIGS / "resnet18.yaml", [f"data.path={path}"])
    arguments = build_arguments(config)
    dataset = arguments.data.dataset
    assert tuple(dataset.feature_shape) == (32, 32, 3) and dataset.num_classes == 10
    assert dataset.train.x.dtype == np.float32 and abs(float(dataset.train.x.mean())) < 1e-5  # standardized
    assert parameters(arguments.model, dataset.feature_shape) == 11_173_962
    assert "total params 11,173,962" in summary(arguments.model, dataset.feature_shape)
    assert arguments.augment is not None
    optimizer = config.optimizer
    assert (optimizer.name, optimizer.learning_rate, optimizer.momentum, optimizer.nesterov,
            optimizer.weight_decay, optimizer.schedule.name) == ("sgd", 0.1, 0.9, True, 5e-4, "cosine")
    # 200 epochs of 45,000 CIFAR-10 training images (10% held out) at batch 128, last partial batch dropped.
    assert optimizer.schedule.decay_steps == config.training.epochs * (45_000 // 128)
    assert config.training.batch_size == 128
    build_optimizer(config.optimizer)


def test_resnet18_without_its_data_file_says_which_file(tmp_path):
    from fdl.config import ConfigError

    with pytest.raises(ConfigError, match=r"data: .*missing\.npz: no such file"):
        build_arguments(load_config(CONFIGS / "resnet18.yaml", [f"data.path={tmp_path / 'missing.npz'}"]))
