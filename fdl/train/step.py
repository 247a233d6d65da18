"""One optimizer step and one evaluation batch, as pure functions.

`make_train_step` returns `step(state, x, y) -> (state, loss, outputs)` for one batch;
it is what both the fused epoch (`lax.scan` over steps) and the host loop call,
so the two paths compute the same numbers.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fdl.nn.core import Layer, batched
from fdl.train.state import TrainState, step_key

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (output, target) of ONE example -> ()
Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x) of ONE example -> x


def _augmented(augment: Augment | None, key, x):
    if augment is None:
        return x
    return jax.vmap(augment)(jax.random.split(key, x.shape[0]), x)


def make_loss_fn(model: Layer, loss: Loss, augment: Augment | None = None):
    """`batch_loss(params, model_state, x, y, key) -> (mean loss, (new model_state, outputs))`.

    Train mode. `outputs` are the model's (batch, *output_shape) predictions.

    x: (batch, *input_shape); y: (batch, *target_shape). The loss is the mean of
    the per-example `loss` over the batch.
    """
    apply = batched(model)

    def batch_loss(params, model_state, x, y, key):
        augment_key, dropout_key = jax.random.split(key)
        x = _augmented(augment, augment_key, x)
        outputs, new_model_state = apply(params, model_state, x, key=dropout_key, train=True)
        return jnp.mean(jax.vmap(loss)(outputs, y)), (new_model_state, outputs)

    return batch_loss


def per_example_grads(model: Layer, loss: Loss, params, model_state, x, y, key):
    """Gradients of each example's loss, stacked: every leaf gets a leading (batch,) axis.

    Each example is its own batch of one, so layers that couple examples
    (BatchNorm in train mode) cannot be used here.
    """
    batch_loss = make_loss_fn(model, loss)

    def one(x1, y1, k):
        return jax.grad(lambda p: batch_loss(p, model_state, x1[None], y1[None], k)[0])(params)

    return jax.vmap(one)(x, y, jax.random.split(key, x.shape[0]))


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
        e.g. for `optax.contrib.differentially_private_aggregate` (DP-SGD).
    """
    batch_loss = make_loss_fn(model, loss, augment)
    value_and_grad = jax.value_and_grad(batch_loss, has_aux=True)

    def step(state: TrainState, x, y):
        key = step_key(state)
        (loss_value, (model_state, outputs)), grads = value_and_grad(state.params, state.model_state, x, y, key)
        if per_example:
            grads = per_example_grads(model, loss, state.params, state.model_state, x, y, key)
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
    """() bool: every element of every leaf of `tree` is finite."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))
