"""`TrainState`: everything a training run carries from step to step."""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdl.nn.core import as_shape
from fdl.train.precision import cast_floating
from fdl.typing import Params, State


__all__ = ["TrainState", "init_train_state", "step_key", "data_key"]


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """A pytree (every field a child); a run is a pure function of it and the data.

    A frozen dataclass registered with `jax.tree_util.register_dataclass` (what
    `flax.struct.dataclass` does, without importing flax at `import fdl`);
    `state.replace(step=...)` returns a changed copy.

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

    def replace(self, **changes) -> "TrainState":
        """A copy with `changes` (field name -> new value)."""
        return dataclasses.replace(self, **changes)


def init_train_state(model, input_shape, optimizer, seed: int | jax.Array, *, param_dtype=None,
                     opt_state_dtype=None) -> TrainState:
    """Initializes params from `seed` and the optimizer state from the params.

    Several named models (a GAN's generator and discriminator) share one state:
    pass dicts with the same keys for `model`, `input_shape` and `optimizer`;
    then `params`, `model_state` and `opt_state` are dicts by model name, model
    i initialized from `fold_in(init key, i)` in key order. A custom step
    (`fit(step=...)`) updates each with its own optimizer.

    The whole initialization is one compiled program, not the model's `init`
    op by op (a second process loads it from the compilation cache, see
    fdl.compilation).

    Args:
      model: the Layer to train, or a dict name -> Layer.
      input_shape: per-example input shape, e.g. (40,), or a dict of them for a model that takes
        a dict of inputs (with several models: a dict model name -> its shape).
      optimizer: an optax transformation (see fdl.optim.make_optimizer), or a dict
        name -> transformation.
      seed: an int, or a traced int32 scalar (so populations can vmap over it).
      param_dtype: the dtype the floating params are kept in (pure low precision,
        fdl.train.precision: e.g. jnp.bfloat16); None keeps the model's own.
      opt_state_dtype: the dtype of the params the optimizer state is built from
        (Adam's moments take it; float16 training keeps them float32); None:
        `param_dtype`. Integer and boolean leaves are never cast, nor the model state.

    Raises:
      ValueError: dicts whose keys differ (names the missing model).
    """
    if isinstance(model, dict):
        for name, given in (("input_shape", input_shape), ("optimizer", optimizer)):
            if not isinstance(given, dict) or set(given) != set(model):
                raise ValueError(f"{name}: with several models give a dict with one entry per model "
                                 f"{sorted(model)}, got {sorted(given) if isinstance(given, dict) else given!r}")
        names = tuple(sorted(model))
        pieces = tuple((model[n], as_shape(input_shape[n]), optimizer[n]) for n in names)
    else:
        names, pieces = None, ((model, as_shape(input_shape), optimizer),)
    seed = seed if isinstance(seed, jax.Array) else np.int32(seed)  # a host int: no eager conversion
    dtypes = (param_dtype, param_dtype if opt_state_dtype is None else opt_state_dtype)
    return jax.jit(functools.partial(_initialize, names, pieces, dtypes))(seed)


def _initialize(names, pieces, dtypes, seed) -> TrainState:
    """The whole initialization, traced as one program.

    names: None for one model, else the sorted model names; pieces: one
    (model, input_shape, optimizer) per model in that order; dtypes:
    (param_dtype, opt_state_dtype), each None for the model's own.
    """
    init_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    param_dtype, opt_state_dtype = dtypes
    params, model_state, opt_state = {}, {}, {}
    for index, (model, input_shape, optimizer) in enumerate(pieces):
        key = init_key if names is None else jax.random.fold_in(init_key, index)
        _, initial, model_state[index] = model.init(key, input_shape)
        params[index] = initial if param_dtype is None else cast_floating(initial, param_dtype)
        opt_params = initial if opt_state_dtype is None else cast_floating(initial, opt_state_dtype)
        opt_state[index] = optimizer.init(opt_params)
    if names is None:
        params, model_state, opt_state = params[0], model_state[0], opt_state[0]
    else:
        params, model_state, opt_state = ({name: part[i] for i, name in enumerate(names)}
                                          for part in (params, model_state, opt_state))
    return TrainState(params=params, model_state=model_state, opt_state=opt_state,
                      step=jnp.zeros((), jnp.int32), rng=run_key)


def step_key(state: TrainState) -> jax.Array:
    """The key for the randomness of optimizer step `state.step` (dropout, augmentation)."""
    return jax.random.fold_in(state.rng, state.step)


def data_key(state: TrainState) -> jax.Array:
    """The key from which every epoch's example order is drawn on the host (`fdl.data.batch_indices`):
    the run's key, which the order mixes with its own stream (`fdl.data.order.DATA_ORDER_STREAM`)."""
    return state.rng
