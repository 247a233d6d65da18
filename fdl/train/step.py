"""One optimizer step and one evaluation batch, as pure functions.

`make_train_step` returns `step(state, x, y) -> (state, loss, outputs)` for one batch;
it is what both the fused epoch (`lax.scan` over steps) and the host loop call,
so the two paths compute the same numbers.

The randomness of a train step is fixed per example: the step key splits into
(augment key, dropout key), and example i of a batch of n gets
`split(augment_key, n)[i]` for its augmentation and `split(dropout_key, n)[i]`
for the model (the same split `fdl.batched` makes). The batch loss and the
per-example losses are both built from one `_example_loss`, so they see the
very same augmented inputs and dropout masks.
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fdl.nn.core import BATCH_AXIS, Layer
from fdl.nn.normalization import NO_BATCH_AXIS_MESSAGE
from fdl.train.state import TrainState, step_key

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (output, target) of ONE example -> ()
Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x) of ONE example -> x


__all__ = [
    "example_keys", "make_loss_fn", "make_per_example_value_and_grad", "per_example_grads",
    "make_train_step", "guard", "all_finite",
]


def example_keys(key: jax.Array, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """(augment keys, dropout keys), each (batch_size, *key_shape): row i is example i's."""
    augment_key, dropout_key = jax.random.split(key)
    return jax.random.split(augment_key, batch_size), jax.random.split(dropout_key, batch_size)


def _example_loss(model: Layer, loss: Loss, augment: Augment | None):
    """`one(params, model_state, x, y, augment_key, dropout_key) -> (loss, (model_state, output))`.

    One example, train mode: x: (*input_shape), y: (*target_shape).
    """

    def one(params, model_state, x, y, augment_key, dropout_key):
        if augment is not None:
            x = augment(augment_key, x)
        output, new_model_state = model.apply(params, model_state, x, key=dropout_key, train=True)
        return loss(output, y), (new_model_state, output)

    return one


def make_loss_fn(model: Layer, loss: Loss, augment: Augment | None = None):
    """`batch_loss(params, model_state, x, y, key) -> (mean loss, (new model_state, outputs))`.

    Train mode, under the batch axis "batch" (so BatchNorm sees batch
    statistics). Example i is augmented and dropped out with its row of
    `example_keys(key, batch)`, as in `fdl.batched`.

    Args:
      params, model_state: the model's.
      x: (batch, *input_shape) inputs.
      y: (batch, *target_shape) targets.
      key: the step's key (`fdl.train.state.step_key`).

    Returns:
      (() mean of the per-example `loss`, (new model_state, (batch, *output_shape) outputs)).
    """
    over_batch = jax.vmap(_example_loss(model, loss, augment), in_axes=(None, None, 0, 0, 0, 0),
                          out_axes=(0, (None, 0)), axis_name=BATCH_AXIS)

    def batch_loss(params, model_state, x, y, key):
        losses, aux = over_batch(params, model_state, x, y, *example_keys(key, x.shape[0]))
        return jnp.mean(losses), aux

    return batch_loss


def make_per_example_value_and_grad(model: Layer, loss: Loss, augment: Augment | None = None):
    """`fn(params, model_state, x, y, key) -> (losses, (model_state, outputs), grads)`, one backward pass.

    Each example's loss is differentiated alone (one `vmap` of `grad` over the
    batch), with the same augmentation and dropout keys `make_loss_fn` gives
    it, so `mean(losses)` is the batch loss and the mean of `grads` over the
    leading axis is the batch gradient.

    Returns:
      losses: (batch,) per-example losses.
      model_state: the model state after the step (unchanged by any layer this
        path allows).
      outputs: (batch, *output_shape) train-mode outputs.
      grads: params' tree, every leaf with a leading (batch,) axis.

    Raises:
      ValueError: the model couples examples (BatchNorm in train mode): with
        per-example gradients each example is its own batch.
    """
    value_and_grad = jax.value_and_grad(_example_loss(model, loss, augment), has_aux=True)
    # No axis name on purpose: a layer that reduces over "batch" must fail, not
    # silently mix other examples into example i's gradient.
    over_examples = jax.vmap(value_and_grad, in_axes=(None, None, 0, 0, 0, 0),
                             out_axes=((0, (None, 0)), 0))

    def per_example(params, model_state, x, y, key):
        try:
            (losses, (new_model_state, outputs)), grads = over_examples(
                params, model_state, x, y, *example_keys(key, x.shape[0]))
        except ValueError as error:
            if NO_BATCH_AXIS_MESSAGE not in str(error):
                raise
            raise ValueError("per_example=True: each example is differentiated alone, so layers "
                             "that couple examples (BatchNorm in train mode) cannot be used — "
                             "replace BatchNorm with LayerNorm or GroupNorm") from None
        return losses, (new_model_state, outputs), grads

    return per_example


def per_example_grads(model: Layer, loss: Loss, params, model_state, x, y, key, *,
                      augment: Augment | None = None):
    """Gradients of each example's loss, stacked: every leaf gets a leading (batch,) axis.

    Example i gets the augmentation and dropout keys the batch loss of
    `make_loss_fn(model, loss, augment)` gives it for `key`, so the mean over
    the leading axis equals that batch loss's gradient. Layers that couple
    examples (BatchNorm in train mode) cannot be used here.

    Args:
      x: (batch, *input_shape); y: (batch, *target_shape).
      key: the step's key.
      augment: optional per-example `(key, x) -> x`, as in `make_train_step`.
    """
    per_example = make_per_example_value_and_grad(model, loss, augment)
    return per_example(params, model_state, x, y, key)[2]


def make_train_step(model: Layer, loss: Loss, optimizer: optax.GradientTransformation, *,
                    augment: Augment | None = None, per_example: bool = False):
    """`step(state, x, y) -> (state, loss, outputs)`: one optimizer step on one batch.

    The step itself spends nothing on checking for NaN/Inf; the epoch drivers
    check the losses and the final params once per epoch and, if something is
    not finite, replay the epoch under `guard` to find the step and keep the
    last finite state (see fdl.train.fit).

    Args:
      model: the Layer being trained.
      loss: per-example loss (see fdl.losses).
      optimizer: optax transformation.
      augment: optional per-example `(key, x) -> x`, applied in train steps only.
      per_example: feed the optimizer per-example gradients (leading batch axis),
        e.g. for `optax.contrib.differentially_private_aggregate` (DP-SGD). They
        come from one backward pass over the same augmented inputs and dropout
        masks as the batch loss; the loss reported is their mean.

    Returns:
      `step(state, x: (batch, *input_shape), y: (batch, *target_shape))
      -> (new state, () mean loss, (batch, *output_shape) train-mode outputs)`.
    """
    if per_example:
        per_example_value_and_grad = make_per_example_value_and_grad(model, loss, augment)

        def value_and_grad(params, model_state, x, y, key):
            losses, aux, grads = per_example_value_and_grad(params, model_state, x, y, key)
            return (jnp.mean(losses), aux), grads
    else:
        value_and_grad = jax.value_and_grad(make_loss_fn(model, loss, augment), has_aux=True)

    def step(state: TrainState, x, y):
        (loss_value, (model_state, outputs)), grads = value_and_grad(
            state.params, state.model_state, x, y, step_key(state))
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        new_state = state.replace(params=optax.apply_updates(state.params, updates),
                                  model_state=model_state, opt_state=opt_state, step=state.step + 1)
        return new_state, loss_value, outputs

    return step


def guard(step):
    """`guarded(state, x, y, halted) -> (state, loss, outputs, halted)`: stop at the first non-finite step.

    A step fails when its loss or its updated params are not finite (so
    non-finite gradients are caught at the step that produced them). From the
    first failed step on, `halted` is True and the state no longer changes, so
    the last finite state survives. It costs a select over the state per step:
    the engine uses it only to replay an epoch that went wrong.
    """

    def guarded(state, x, y, halted):
        new_state, loss_value, outputs = step(state, x, y)
        halted = halted | ~(jnp.isfinite(loss_value) & all_finite(new_state.params))
        state = jax.tree.map(lambda new, old: jnp.where(halted, old, new), new_state, state)
        return state, loss_value, outputs, halted

    return guarded


def all_finite(tree) -> jax.Array:
    """() bool: every element of every leaf of `tree` is finite (True for a tree with no leaves)."""
    # reduce, not jnp.stack: a model without params (e.g. one Relu) has no leaves to stack.
    return functools.reduce(jnp.logical_and, (jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)),
                            jnp.asarray(True))
