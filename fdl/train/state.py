"""`TrainState`: everything a training run carries from step to step."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax import struct

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


def init_train_state(model, input_shape, optimizer, seed: int | jax.Array) -> TrainState:
    """Initializes params from `seed` and the optimizer state from the params.

    Several named models (a GAN's generator and discriminator) share one state:
    pass dicts with the same keys for `model`, `input_shape` and `optimizer`;
    then `params`, `model_state` and `opt_state` are dicts by model name, model
    i initialized from `fold_in(init key, i)` in key order. A custom step
    (`fit(step=...)`) updates each with its own optimizer.

    Args:
      model: the Layer to train, or a dict name -> Layer.
      input_shape: per-example input shape, e.g. (40,) (or a dict name -> shape).
      optimizer: an optax transformation (see fdl.optim.make_optimizer), or a dict
        name -> transformation.
      seed: an int, or a traced int32 scalar (so populations can vmap over it).

    Raises:
      ValueError: dicts whose keys differ (names the missing model).
    """
    root = jax.random.PRNGKey(seed)
    init_key, run_key = jax.random.split(root)
    if isinstance(model, dict):
        for name, given in (("input_shape", input_shape), ("optimizer", optimizer)):
            if not isinstance(given, dict) or set(given) != set(model):
                raise ValueError(f"{name}: with several models give a dict with one entry per model "
                                 f"{sorted(model)}, got {sorted(given) if isinstance(given, dict) else given!r}")
        params, model_state, opt_state = {}, {}, {}
        for index, name in enumerate(sorted(model)):
            _, params[name], model_state[name] = model[name].init(jax.random.fold_in(init_key, index),
                                                                  tuple(input_shape[name]))
            opt_state[name] = optimizer[name].init(params[name])
    else:
        _, params, model_state = model.init(init_key, tuple(input_shape))
        opt_state = optimizer.init(params)
    return TrainState(params=params, model_state=model_state, opt_state=opt_state,
                      step=jnp.zeros((), jnp.int32), rng=run_key)


def step_key(state: TrainState) -> jax.Array:
    """The key for the randomness of optimizer step `state.step` (dropout, augmentation)."""
    return jax.random.fold_in(state.rng, state.step)


DATA_ORDER_STREAM = 0x0DA7A


def data_key(state: TrainState) -> jax.Array:
    """The key from which every epoch's example order is drawn."""
    return jax.random.fold_in(state.rng, DATA_ORDER_STREAM)
