"""Activations, as functions (from `jax.nn`) and as parameter-free layers.

`gelu` is the exact erf form by default (PyTorch's and Keras' default); pass
`approximate=True` for the tanh approximation (jax.nn's default).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

from fdl.errors import unknown_name_message
from fdl.nn.core import Layer

__all__ = ["Activation", "Identity", "Relu", "LeakyRelu", "Elu", "Gelu", "Silu", "Tanh", "Sigmoid",
           "Softmax", "LogSoftmax", "elementwise", "get_activation", "ACTIVATIONS", "relu",
           "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax",
           "identity"]

relu = jax.nn.relu
elu = jax.nn.elu
silu = jax.nn.silu
tanh = jnp.tanh
sigmoid = jax.nn.sigmoid
softmax = jax.nn.softmax
log_softmax = jax.nn.log_softmax


def leaky_relu(x, negative_slope: float = 0.01):
    """max(x, negative_slope * x); 0.01 as in PyTorch (Keras uses 0.3)."""
    return jax.nn.leaky_relu(x, negative_slope)


def gelu(x, approximate: bool = False):
    """x * Phi(x); exact erf form unless `approximate`."""
    return jax.nn.gelu(x, approximate=approximate)


def identity(x):
    return x


ACTIVATIONS: dict[str, Callable] = {
    "relu": relu, "leaky_relu": leaky_relu, "elu": elu, "gelu": gelu, "silu": silu,
    "swish": silu, "tanh": tanh, "sigmoid": sigmoid, "softmax": softmax,
    "log_softmax": log_softmax, "identity": identity, "linear": identity,
}


def get_activation(spec: str | Callable) -> Callable:
    """An activation function from its name (see ACTIVATIONS) or a callable."""
    if callable(spec):
        return spec
    if spec not in ACTIVATIONS:
        raise ValueError(unknown_name_message("activation", spec, ACTIVATIONS))
    return ACTIVATIONS[spec]


def elementwise(kind: str, fn: Callable) -> Layer:
    """A parameter-free layer applying `fn` to one example; the shape is kept."""

    def init(key, input_shape):
        del key
        return input_shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        return fn(x), state

    return Layer(init, apply, kind)


def Activation(spec: str | Callable) -> Layer:
    """A layer from an activation's name or function, e.g. Activation("gelu")."""
    return elementwise("Activation", get_activation(spec))


def Identity() -> Layer:
    return elementwise("Identity", identity)


def Relu() -> Layer:
    return elementwise("Relu", relu)


def LeakyRelu(negative_slope: float = 0.01) -> Layer:
    return elementwise("LeakyRelu", functools.partial(leaky_relu, negative_slope=negative_slope))


def Elu(alpha: float = 1.0) -> Layer:
    return elementwise("Elu", functools.partial(elu, alpha=alpha))


def Gelu(approximate: bool = False) -> Layer:
    return elementwise("Gelu", functools.partial(gelu, approximate=approximate))


def Silu() -> Layer:
    return elementwise("Silu", silu)


def Tanh() -> Layer:
    return elementwise("Tanh", tanh)


def Sigmoid() -> Layer:
    return elementwise("Sigmoid", sigmoid)


def Softmax(axis: int = -1) -> Layer:
    return elementwise("Softmax", functools.partial(softmax, axis=axis))


def LogSoftmax(axis: int = -1) -> Layer:
    return elementwise("LogSoftmax", functools.partial(log_softmax, axis=axis))
