"""fdl.nn.models.resnet18: the CIFAR ResNet-18, checked against its closed-form size and one step."""
from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.nn.models import MODELS, resnet18
from fdl.nn.summary import summary_rows

IMAGE = (32, 32, 3)
STAGE_STRIDES = (1, 2, 2, 2)


def closed_form_params(width: int, num_classes: int, channels: int = 3) -> int:
    """Parameters of the CIFAR ResNet-18 counted from its definition (bias-free convs, affine BN)."""
    conv = lambda k, c_in, c_out: k * k * c_in * c_out  # noqa: E731
    norm = lambda c: 2 * c  # noqa: E731 — scale and bias; the running statistics are state
    total, c_in = conv(3, channels, width) + norm(width), width
    for s, stride in enumerate(STAGE_STRIDES):
        c = width * 2 ** s
        for block in range(2):
            total += conv(3, c_in, c) + conv(3, c, c) + 2 * norm(c)
            if block == 0 and (stride != 1 or c_in != c):
                total += conv(1, c_in, c) + norm(c)  # the projected shortcut
            c_in = c
    return total + c_in * num_classes + num_classes


def abstract_init(model, input_shape=IMAGE):
    """(output shape, params, state) as shapes only: nothing is allocated."""
    box = {}

    def init(key):
        box["shape"], params, state = model.init(key, input_shape)
        return params, state

    params, state = jax.eval_shape(init, jax.random.key(0))
    return box["shape"], params, state


def count(tree) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def test_shapes_params_and_batch_norm_state_of_the_full_model():
    model = resnet18(num_classes=10)
    out_shape, params, state = abstract_init(model)
    assert out_shape == (10,) and MODELS["resnet18"] is resnet18
    # The well-known figure for the CIFAR ResNet-18 (kuangliu/pytorch-cifar, torchsummary).
    assert count(params) == closed_form_params(64, 10) == 11_173_962
    assert count(params) == int(nn.summary(model, IMAGE).rsplit("total params ", 1)[1].replace(",", ""))
    # 20 BatchNorms: the stem, 4 per stage's two blocks, and the 3 projected shortcuts.
    norms = [node for node in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, dict) and "mean" in n)
             if isinstance(node, dict)]
    assert len(norms) == 20 and all(set(n) == {"mean", "var"} for n in norms)
    shortcut = state["stage_3"]["block_0"]["parallel_0"]["shortcut"]["batch_norm_1"]
    chex.assert_shape([shortcut["mean"], shortcut["var"]], (512,))
    w = params["stage_2"]["block_0"]["parallel_0"]["shortcut"]["conv2d_0"]["w"]
    chex.assert_shape(w, (1, 1, 128, 256))
    assert "b" not in params["stem"]["conv2d_0"]  # bias-free convs: BatchNorm has the bias
    assert nn.output_shape(resnet18(num_classes=100, width=8), IMAGE) == (100,)
    assert count(abstract_init(resnet18(num_classes=100, width=8))[1]) == closed_form_params(8, 100)


def test_stages_halve_the_image_and_double_the_channels():
    rows = {path: shape for path, _, shape, _ in summary_rows(resnet18(width=4), IMAGE)}
    assert [rows[f"stage_{s}"] for s in range(4)] == [(32, 32, 4), (16, 16, 8), (8, 8, 16), (4, 4, 32)]
    assert rows["stem"] == (32, 32, 4) and rows["pool"] == (32,)


def test_one_train_step_on_a_tiny_batch_is_finite_and_updates_the_running_statistics():
    model = resnet18(num_classes=10)
    optimizer = fdl.optim.make_optimizer("sgd", learning_rate=0.1, momentum=0.9, nesterov=True,
                                         weight_decay=5e-4)
    state = fdl.init_train_state(model, IMAGE, optimizer, seed=0)
    x = jax.random.normal(jax.random.key(1), (4, *IMAGE), jnp.float32)
    y = jnp.arange(4, dtype=jnp.int32)
    step = jax.jit(fdl.train.make_train_step(model, fdl.losses.get_loss("cross_entropy"), optimizer))
    logits, _ = jax.eval_shape(nn.batched(model), state.params, state.model_state, x)
    chex.assert_shape(logits, (4, 10))
    new_state, logs = step(state, (x, y))
    assert np.isfinite(float(logs["loss"])), logs
    chex.assert_trees_all_equal_shapes(new_state.params, state.params)
    stem = new_state.model_state["stem"]["batch_norm_1"]["mean"]
    assert not np.allclose(stem, state.model_state["stem"]["batch_norm_1"]["mean"])


@pytest.mark.parametrize("arguments, message", [
    ({"num_classes": 0}, r"resnet18: num_classes must be a positive int, got 0"),
    ({"width": 2.5}, r"resnet18: width must be a positive int, got 2.5"),
])
def test_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        resnet18(**arguments)


def test_a_flat_input_is_refused_at_the_stem_conv():
    with pytest.raises(nn.ShapeError, match=r"^serial\[0\]\.serial\[0\] Conv2D: expected input \(height, "
                                            r"width, channels\), got \(3072,\)"):
        nn.output_shape(resnet18(width=4), (32 * 32 * 3,))
