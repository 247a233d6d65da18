"""`TrainState`: everything a training run carries from step to step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

from fdl.nn.core import Layer
from fdl.typing import Params, State


__all__ = ["TrainState", "init_train_state", "step_key", "DATA_ORDER_STREAM", "data_key"]


@struct.dataclass
class TrainState:
    """A pytree; a run is a pure function of it and the data.

    Attributes:
      params: trainable arrays (the only thing the optimizer sees).
      model_state: non-trainable arrays, e.g. BatchNorm running statistics.
      opt_state: optax state; injected hyperparameters live here as arrays.
      step: () int32, optimizer steps taken.
      rng: (2,) uint32 raw PRNG key, constant for the run: step `s` uses
        `fold_in(rng, s)`, so a resumed run draws the very same numbers.
    """

    params: Params
    model_state: State
    opt_state: optax.OptState
    step: jax.Array
    rng: jax.Array


def init_train_state(model: Layer, input_shape, optimizer: optax.GradientTransformation,
                     seed: int | jax.Array) -> TrainState:
    """Initializes params from `seed` and the optimizer state from the params.

    Args:
      model: the Layer to train.
      input_shape: per-example input shape, e.g. (40,).
      optimizer: an optax transformation (see fdl.optim.make_optimizer).
      seed: an int, or a traced int32 scalar (so populations can vmap over it).
    """
    root = jax.random.PRNGKey(seed)
    init_key, run_key = jax.random.split(root)
    _, params, model_state = model.init(init_key, tuple(input_shape))
    return TrainState(params=params, model_state=model_state, opt_state=optimizer.init(params),
                      step=jnp.zeros((), jnp.int32), rng=run_key)


def step_key(state: TrainState) -> jax.Array:
    """The key for the randomness of optimizer step `state.step` (dropout, augmentation)."""
    return jax.random.fold_in(state.rng, state.step)


DATA_ORDER_STREAM = 0x0DA7A


def data_key(state: TrainState) -> jax.Array:
    """The key from which every epoch's example order is drawn."""
    return jax.random.fold_in(state.rng, DATA_ORDER_STREAM)
