"""One optimizer step and one evaluation batch, as pure functions.

`make_train_step` returns `step(state, batch) -> (state, logs)` for one batch (any
pytree with a leading example axis: `(x, y)`, a dict, a bare `x`); it is what both
the fused epoch (`lax.scan` over steps) and the host loop call, so the two paths
compute the same numbers. A user's own step (`make_custom_step`) has the same form.

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

from fdl.nn.core import BATCH_AXIS, Layer, batched
from fdl.nn.normalization import NO_BATCH_AXIS_MESSAGE
from fdl.objectives import PREDICTIONS, Objective, supervised, takes_step
from fdl.train.finite import all_finite
from fdl.train.precision import Precision, loss_scale, mixed_apply
from fdl.train.state import TrainState, step_key

Loss = Callable[[jax.Array, jax.Array], jax.Array]  # (output, target) of ONE example -> ()
Augment = Callable[[jax.Array, jax.Array], jax.Array]  # (key, x) of ONE example -> x


__all__ = [
    "example_keys", "make_loss_fn", "make_per_example_value_and_grad", "per_example_grads",
    "augment_batch", "make_train_step", "RESERVED_LOGS", "check_log_names", "make_custom_step", "guard",
    "all_finite",
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


def augment_batch(augment: Augment | None, batch, key: jax.Array):
    """The batch with each example's input augmented with its own key (`split(key, n)[i]`).

    The input is the first element of a tuple or list batch (x of `(x, y)`), a
    bare array batch itself, or — for a dict batch — the whole per-example dict
    (`augment(key, {"tokens": ..., "mask": ...})` returns the dict).
    """
    if augment is None:
        return batch
    if isinstance(batch, (tuple, list)):
        x = batch[0]
        x = jax.vmap(augment)(jax.random.split(key, jax.tree.leaves(x)[0].shape[0]), x)
        rest = (x, *batch[1:])
        return type(batch)(*rest) if hasattr(batch, "_fields") else type(batch)(rest)
    return jax.vmap(augment)(jax.random.split(key, jax.tree.leaves(batch)[0].shape[0]), batch)


def _apply_updates(optimizer, state: TrainState, grads, model_state) -> TrainState:
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    return state.replace(params=optax.apply_updates(state.params, updates), model_state=model_state,
                         opt_state=opt_state, step=state.step + 1)


def make_train_step(model: Layer, loss: Loss | None, optimizer: optax.GradientTransformation, *,
                    objective: Objective | None = None, augment: Augment | None = None,
                    per_example: bool = False, precision: Precision | None = None):
    """`step(state, batch) -> (state, logs)`: one optimizer step on one batch.

    What is minimized is `objective` (see fdl.objectives), or — the Keras case —
    the batch mean of a per-example `loss` on `(x, y)` batches
    (`fdl.objectives.supervised(loss)`, the same numbers). The step key
    (`step_key(state)`) is the objective's key; its first half augments each
    example's input (`augment_batch`), the objective passes the second half to
    the model (`fdl.objectives.model_key`).

    The step itself spends nothing on checking for NaN/Inf; the epoch drivers
    check the losses and the final params once per epoch and, if something is
    not finite, replay the epoch under `guard` to find the step and keep the
    last finite state (see fdl.train.fit).

    Args:
      model: the Layer being trained.
      loss: per-example loss (see fdl.losses), or None when `objective` is given.
      optimizer: optax transformation.
      objective: `objective(apply, params, model_state, batch, key) -> (loss, (model_state, logs))`.
      augment: optional per-example `(key, x) -> x`, applied in train steps only.
      per_example: feed the optimizer per-example gradients (leading batch axis),
        e.g. for `optax.contrib.differentially_private_aggregate` (DP-SGD). They
        come from one backward pass over the same augmented inputs and dropout
        masks as the batch loss; the loss reported is their mean. Needs `loss`.
      precision: a `fdl.train.precision.Precision` other than float32: the model
        computes in its compute dtype (params and inputs cast in, outputs back as
        float32); with float16 the loss is multiplied by the optimizer state's
        loss scale before differentiating (`optimizer` must then be wrapped by
        `dynamic_loss_scale`), and the logged loss is the unscaled one.

    Returns:
      `step(state, batch) -> (new state, logs)`: logs["loss"] () the value
      minimized, the objective's own logs, and `logs[PREDICTIONS] = (outputs,
      targets)` when the objective gives them (the engine's exact metrics).
    """
    if (loss is None) == (objective is None):
        raise ValueError("make_train_step: give a per-example loss or an objective, not both")
    low_precision = precision is not None and precision.name != "float32"
    if per_example:
        if low_precision:
            raise ValueError(f"precision: {precision.name!r} with per_example=True is not supported — "
                             "train per-example gradients in float32")
        if loss is None:
            raise ValueError("per_example=True needs a per-example loss (loss=...), not an objective — "
                             "DP-SGD clips each example's gradient of its own loss")
        per_example_value_and_grad = make_per_example_value_and_grad(model, loss, augment)

        def step(state: TrainState, batch):
            x, y = batch
            losses, (model_state, outputs), grads = per_example_value_and_grad(
                state.params, state.model_state, x, y, step_key(state))
            logs = {"loss": jnp.mean(losses), PREDICTIONS: (outputs, y)}
            return _apply_updates(optimizer, state, grads, model_state), logs

        return step
    objective = objective if objective is not None else supervised(loss)
    train_apply = functools.partial(batched(model), train=True)
    if low_precision:
        train_apply = mixed_apply(train_apply, precision.compute_dtype)
    with_step = takes_step(objective)

    def value(params, model_state, batch, key, step, scale):
        extra = {"step": step} if with_step else {}
        loss_value, (model_state, logs) = objective(train_apply, params, model_state, batch, key, **extra)
        # differentiated: the loss times the loss scale (1 unless float16); reported: the loss
        return loss_value if scale is None else loss_value * scale, (loss_value, model_state, logs)

    value_and_grad = jax.value_and_grad(value, has_aux=True)

    def step(state: TrainState, batch):
        key = step_key(state)
        batch = augment_batch(augment, batch, jax.random.split(key)[0])
        (_, (loss_value, model_state, logs)), grads = value_and_grad(
            state.params, state.model_state, batch, key, state.step, loss_scale(state.opt_state))
        logs = check_log_names(logs, "objective")
        return _apply_updates(optimizer, state, grads, model_state), {"loss": loss_value, **logs}

    return step


# What the engine itself logs each epoch; a step's or objective's logs may not take these names.
RESERVED_LOGS = ("finite", "step", "epoch", "learning_rate", "time_s", "steps_per_s")


def check_log_names(logs: dict, where: str) -> dict:
    """`logs` as they are, or a one-line error for a name the engine's own logs use."""
    for name in logs:
        if name in RESERVED_LOGS or str(name).startswith("val_"):
            raise ValueError(f"{where}: logs[{name!r}] — fdl logs {', '.join(RESERVED_LOGS)} and the "
                             "val_ keys itself; give this value another name")
    return logs


def make_custom_step(step):
    """A user's `step(state, batch) -> (state, logs)` as the engine runs it.

    The user's step does the whole update (several models, several optimizers:
    see `init_train_state` with dicts); fdl counts the step afterwards (keys and
    data order follow `state.step`), and requires `logs["loss"]`, the value it
    watches for NaN/Inf.
    """

    def counted(state: TrainState, batch):
        new_state, logs = step(state, batch)
        if not isinstance(logs, dict) or "loss" not in logs:
            raise ValueError("step: a custom step must return (state, logs) with logs['loss'], the "
                             "scalar fdl checks for NaN/Inf and logs as 'loss'")
        return new_state.replace(step=state.step + 1), check_log_names(logs, "step")

    return counted


def guard(step):
    """`guarded(state, batch, halted) -> (state, logs, halted)`: stop at the first non-finite step.

    A step fails when its loss or its updated params are not finite (so
    non-finite gradients are caught at the step that produced them). From the
    first failed step on, `halted` is True and the state no longer changes, so
    the last finite state survives. It costs a select over the state per step:
    the engine uses it only to replay an epoch that went wrong.
    """

    def guarded(state, batch, halted):
        new_state, logs = step(state, batch)
        halted = halted | ~(jnp.isfinite(logs["loss"]) & all_finite(new_state.params))
        state = jax.tree.map(lambda new, old: jnp.where(halted, old, new), new_state, state)
        return state, logs, halted

    return guarded
