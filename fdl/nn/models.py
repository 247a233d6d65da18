"""Ready-made models, by name: the MNIST-1D reference models and the classic programs.

Every entry of MODELS is a function returning a Layer; configs name them
(`model: {name: mnist1d_cnn}`) and pass keyword arguments. Models that take a
flat signal `(length,)` add the channel axis themselves, so they train on the
built-in data as loaded.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from fdl.nn.activations import Activation
from fdl.nn.combinators import serial
from fdl.nn.conv import Conv1D, Conv2D
from fdl.nn.core import Layer, init_child, named
from fdl.nn.dense import Dense
from fdl.nn.dropout import Dropout
from fdl.nn.pooling import MaxPool2D
from fdl.nn.recurrent import GRU, LSTM
from fdl.nn.reshape import Flatten, Reshape

__all__ = ["MODELS", "logistic_regression", "mlp", "cnn1d", "gru_classifier", "lstm_classifier",
           "cnn2d", "autoencoder", "vae", "vae_decoder"]


def logistic_regression(num_classes: int = 10) -> Layer:
    """Flatten -> Dense(num_classes): multinomial logistic regression on logits."""
    return serial(Flatten(), Dense(num_classes))


def mlp(hidden: Sequence[int] = (100, 100), num_classes: int = 10, *, activation: str = "relu",
        dropout: float = 0.0, w_init: str = "lecun_normal") -> Layer:
    """Flatten -> [Dense(h) -> activation -> Dropout?] per hidden width -> Dense(num_classes)."""
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width, w_init=w_init), Activation(activation)]
        layers += [Dropout(dropout)] if dropout else []
    return serial(*layers, Dense(num_classes, w_init=w_init))


def cnn1d(channels: int = 25, kernel_sizes: Sequence[int] = (5, 3, 3), strides: int = 2,
          num_classes: int = 10, *, activation: str = "relu", implementation: str = "auto") -> Layer:
    """The MNIST-1D CNN: (length,) -> Reshape (length, 1) -> Conv1D x3 (SAME) -> Flatten -> Dense."""
    layers = [Reshape((-1, 1))]
    for kernel in kernel_sizes:
        layers += [Conv1D(channels, kernel, strides=strides, implementation=implementation),
                   Activation(activation)]
    return serial(*layers, Flatten(), Dense(num_classes))


def gru_classifier(hidden: int = 6, num_classes: int = 10, *, bidirectional: bool = True) -> Layer:
    """The MNIST-1D GRU: (length,) -> (length, 1) -> GRU over all steps -> Flatten -> Dense on all outputs."""
    return serial(Reshape((-1, 1)), GRU(hidden, return_sequences=True, bidirectional=bidirectional),
                  Flatten(), Dense(num_classes))


def lstm_classifier(hidden: int = 50, num_outputs: int = 1) -> Layer:
    """The Keras recurrent classifier: LSTM(hidden) last output -> Dense(num_outputs) logits."""
    return serial(Reshape((-1, 1)), LSTM(hidden), Dense(num_outputs))


def cnn2d(num_classes: int = 10) -> Layer:
    """The PyTorch CNN: Conv 32 3x3 -> ReLU -> MaxPool 2 -> Conv 64 3x3 -> ReLU -> MaxPool 2 -> fc 100 -> fc."""
    return serial(Conv2D(32, 3, padding="VALID"), Activation("relu"), MaxPool2D(2),
                  Conv2D(64, 3, padding="VALID"), Activation("relu"), MaxPool2D(2), Flatten(),
                  Dense(100), Activation("relu"), Dense(num_classes))


def autoencoder(bottleneck: int = 50, hidden: Sequence[int] = (256,), *,
                activation: str = "relu") -> Layer:
    """Dense autoencoder on flat inputs: encoder to `bottleneck`, mirrored decoder, linear output."""

    def build(input_size: int) -> Layer:
        encoder = [layer for width in hidden for layer in (Dense(width), Activation(activation))]
        decoder = [layer for width in reversed(hidden) for layer in (Dense(width), Activation(activation))]
        return serial(named("encoder", serial(Flatten(), *encoder, Dense(bottleneck))),
                      named("decoder", serial(*decoder, Dense(input_size))))

    return _sized_by_input("Autoencoder", build)


def vae(latent: int = 16, hidden: Sequence[int] = (256,), *, activation: str = "relu") -> Layer:
    """Variational autoencoder on flat inputs in [0, 1]; train it with loss "elbo_bernoulli".

    Output per example: `(reconstruction_logits (input_size,), mean (latent,), log_var (latent,))`.
    In train mode z = mean + exp(log_var / 2) * eps (reparameterization, eps from
    the layer's key); in eval mode z = mean. To sample from the prior, apply
    `vae_decoder(input_size, hidden)` with `params["decoder"]` to z ~ N(0, I).
    """

    def build(input_size: int) -> Layer:
        trunk = [layer for width in hidden for layer in (Dense(width), Activation(activation))]
        encoder = serial(Flatten(), *trunk, Dense(2 * latent))
        return _VAE(encoder, vae_decoder(input_size, hidden, activation=activation), latent)

    return _sized_by_input("VAE", build)


def vae_decoder(input_size: int, hidden: Sequence[int] = (256,), *, activation: str = "relu") -> Layer:
    """The VAE's decoder alone: z (latent,) -> reconstruction (input_size,); takes `params["decoder"]`."""
    back = [layer for width in reversed(hidden) for layer in (Dense(width), Activation(activation))]
    return serial(*back, Dense(input_size))


def _VAE(encoder: Layer, decoder: Layer, latent: int) -> Layer:
    def init(key, input_shape):
        _, enc_params, enc_state = init_child("VAE", 0, "encoder", encoder, key, input_shape)
        out, dec_params, dec_state = init_child("VAE", 1, "decoder", decoder, key, (latent,))
        return ((out[0],), (latent,), (latent,)), {"encoder": enc_params, "decoder": dec_params}, \
            {"encoder": enc_state, "decoder": dec_state}

    def apply(params, state, x, *, key=None, train=False):
        stats, enc_state = encoder.apply(params["encoder"], state["encoder"], x, train=train)
        mean, log_var = jnp.split(stats, 2)
        z = mean
        if train:
            if key is None:
                raise ValueError("VAE: train=True needs a key for the reparameterization noise")
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
        reconstruction, dec_state = decoder.apply(params["decoder"], state["decoder"], z, train=train)
        return (reconstruction, mean, log_var), {"encoder": enc_state, "decoder": dec_state}

    return Layer(init, apply, "VAE")


def _sized_by_input(kind: str, build: Callable[[int], Layer]) -> Layer:
    """A layer whose structure depends on the flattened input size, known only at init."""

    def flat_size(shape) -> int:
        size = 1
        for d in shape:
            size *= d
        return size

    def init(key, input_shape):
        return build(flat_size(input_shape)).init(key, input_shape)

    def apply(params, state, x, *, key=None, train=False):
        return build(x.size).apply(params, state, x, key=key, train=train)

    return Layer(init, apply, kind)


MODELS: dict[str, Callable[..., Layer]] = {
    "logistic_regression": logistic_regression,
    "mlp": mlp,
    "mnist1d_mlp": mlp,
    "cnn1d": cnn1d,
    "mnist1d_cnn": cnn1d,
    "gru_classifier": gru_classifier,
    "mnist1d_gru": gru_classifier,
    "lstm_classifier": lstm_classifier,
    "cnn2d": cnn2d,
    "autoencoder": autoencoder,
    "vae": vae,
}

