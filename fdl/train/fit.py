"""`fit`, `evaluate`, `predict`: the one-call API over the engine's pieces.

`fit` compiles one epoch (by default fused into a single `lax.scan` with
on-device shuffling) and calls it once per epoch; between epochs it evaluates
the validation split and runs the callbacks on the host.
"""
from __future__ import annotations

import math
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdl.compilation import CompileClock, use_compilation_cache
from fdl.data.dataset import as_arrays, as_examples
from fdl.data.stream import NpyStream
from fdl.io import to_python
from fdl.losses import get_loss
from fdl.metrics import Metric, get_metrics, infer_num_classes
from fdl.nn.core import Layer, as_shape
from fdl.nn.summary import output_shape
from fdl.optim import make_optimizer
from fdl.train.callbacks import ProgressBar, Run, as_callback
from fdl.train.checks import check_data, check_example_tree, check_positive_int, example_shape, host_examples
from fdl.train.evaluate import DEFAULT_EVAL_BATCH_SIZE, Evaluator, to_floats
from fdl.train.interrupt import TrainingInterrupted, graceful_interrupts
from fdl.train.mesh import as_mesh, check_divisible, constrain_state, place, replicated, state_sharding
from fdl.train.precision import dynamic_loss_scale, get_precision, updates_in_float32
from fdl.train.placement import device_epochs, fits_on_device, host_epochs
from fdl.train.state import TrainState, init_train_state
from fdl.train.step import make_custom_step, make_train_step


__all__ = [
    "History", "NonFiniteLossError", "as_optimizer", "metrics_for", "fit", "evaluate", "predict",
]


class History(list):
    """Per-epoch logs (a list of dicts); `history["val_loss"]` gives one key across epochs.

    `history.timing` (seconds): first_step_s, from the call of `fit` to the first
    epoch's program starting (checks, initialization, compiling); compile_s,
    tracing and compiling (or loading from the compilation cache) during fit;
    callbacks_s, the host's time in callbacks (it overlaps the next epoch's
    training); fit_s, the whole call.
    """

    def __init__(self, *rows):
        super().__init__(*rows)
        self.timing: dict[str, float] = {}

    def __getitem__(self, key):
        if isinstance(key, str):
            return [row[key] for row in self if key in row]
        return super().__getitem__(key)


class NonFiniteLossError(FloatingPointError):
    """Training hit a non-finite loss; `.state` is the last finite TrainState."""

    def __init__(self, epoch: int, step: int, global_step: int, state: TrainState, history: History):
        self.epoch, self.step, self.state, self.history = epoch, step, state, history
        super().__init__(
            f"non-finite loss at epoch {epoch}, step {step} of the epoch (global step "
            f"{global_step}, counting from 1) — training stopped and error.state holds the last "
            "finite state; lower the learning rate, clip gradients (clip_global_norm=1.0) or check "
            "the data for NaN/Inf")


def as_optimizer(optimizer) -> optax.GradientTransformation:
    """An optax transformation from a name, a config dict, or itself."""
    if isinstance(optimizer, str):
        return make_optimizer(optimizer)
    if isinstance(optimizer, dict):
        return make_optimizer(**optimizer)
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    raise TypeError(f"optimizer: expected a name, a dict such as {{'name': 'adam', "
                    f"'learning_rate': 1e-3}} or an optax transformation, got {type(optimizer).__name__}")


def metrics_for(model: Layer, input_shape, metrics: Sequence) -> tuple[Metric, ...]:
    """The Metric objects for a model's output; a model with several outputs takes none."""
    out_shape = output_shape(model, input_shape)
    if metrics and out_shape and isinstance(out_shape[0], tuple):
        names = ", ".join(m if isinstance(m, str) else m.name for m in metrics)
        raise ValueError(f"metrics [{names}]: this model returns {len(out_shape)} outputs "
                         f"{out_shape}, metrics need one — pass metrics=[] (the loss is still logged)")
    return get_metrics(metrics, infer_num_classes(out_shape))


def _default_input_shape(data) -> tuple | dict | None:
    """The model's per-example input shape read off the data: x of a tuple batch (a dict x, a model's
    dict of inputs, gives a dict of shapes), a bare array; None for a dict batch (an objective's)."""
    first = data[0] if isinstance(data, (tuple, list)) and data else data
    if first is not data and isinstance(first, dict) and all(hasattr(leaf, "shape") for leaf in first.values()):
        return {name: tuple(leaf.shape[1:]) for name, leaf in first.items()}
    return tuple(first.shape[1:]) if hasattr(first, "shape") else None


def _check_model_arguments(model, *, step, state, objective, metrics, augment, per_example) -> None:
    """One-line errors for arguments that do not go together (a custom step does the whole update)."""
    if step is not None and (augment is not None or per_example):
        raise ValueError("step: a custom step does the whole update — augment its batch and compute "
                         "per-example gradients inside it (augment= and per_example= apply to loss/objective)")
    if model is None:
        if step is None:
            raise ValueError("model: None trains only with a custom step= (and its state=) — pass the Layer")
        if state is None:
            raise ValueError("state: fit(None, ..., step=...) needs state= — build it with "
                             "fdl.init_train_state(models, input_shapes, optimizers, seed)")
        if objective is not None or metrics:
            raise ValueError("objective/metrics: they need the model, and fit(None, ...) has none — "
                             "log what you measure from the custom step instead")


def _validation(model, val, *, supervised_path: bool, loss_fn, input_shape, objective):
    """The validation data, checked like the training data, or None."""
    if val is None:
        return None
    if supervised_path:
        x_val, y_val = as_arrays(val, "val")
        _, _, y_val = check_data("val", model, x_val, y_val, loss=loss_fn, expected_shape=input_shape)
        return x_val, y_val
    if objective is None:
        raise ValueError("val: a custom step has no validation objective — pass objective= as well "
                         "(it scores val), or drop val")
    data = as_examples(val, "val")
    check_example_tree("val", data)
    return data


def fit(model: Layer | None, train, val=None, *, loss="cross_entropy", objective=None, step=None,
        input_shape=None, optimizer="adam", epochs: int = 1, batch_size: int = 32, metrics: Sequence = (),
        callbacks: Sequence = (), seed: int = 0, augment=None, state: TrainState | None = None,
        fused: bool = True, placement: str = "auto", per_example: bool = False, mesh=None,
        shard_params: str | None = None, precision: str = "float32", eval_batch_size: int = DEFAULT_EVAL_BATCH_SIZE, verbose: int = 1) -> tuple[TrainState, History]:
    """Trains `model` on `train` and returns the final state and the per-epoch history.

    Each epoch is one compiled call: by default `lax.scan` over the epoch's
    steps with the data on the device, shuffled there by the state's data key;
    `fused=False` steps from the host with one compiled call per step (same
    batches, same numbers). Data too big for the device (or an
    `fdl.data.NpyStream`) stays on the host and is streamed batch by batch,
    prefetched to the device, in the same order. The last partial batch of each
    epoch is dropped.

    What is minimized: a per-example `loss` on `(x, y)` (Keras' case); or an
    `objective(apply, params, model_state, batch, key) -> (loss, (model_state,
    logs))` (fdl.objectives) on any batch — a pytree with a leading example
    axis: `(x, y)`, a dict such as `{"tokens": ..., "mask": ...}`, a bare `x`;
    or a whole custom `step(state, batch) -> (state, logs)` (several models,
    several optimizers). The objective's and the step's logs are averaged over
    the epoch and recorded like any metric.

    Example:
      >>> state, history = fdl.fit(model, (x, y), val=(x_val, y_val), loss="cross_entropy",
      ...                          optimizer={"name": "adam", "learning_rate": 1e-3},
      ...                          epochs=2, batch_size=32, metrics=["accuracy"], seed=0)
      >>> history["val_accuracy"]                               # one value per epoch
      [..., ...]

    Args:
      model: the Layer to train (written for one example); None with `step` and `state`.
      train: (x, y) arrays, an fdl.data Split, an fdl.data Dataset (then its
        val split is used when `val` is None), an fdl.data.NpyStream (its
        files are read in this run's order; `batch_size` is fit's), or — with
        `objective` or `step` — any pytree of arrays with n examples.
      val: optional validation data, evaluated after every epoch ("val_" keys)
        with the loss, or the objective in eval mode.
      loss: a name from fdl.losses or a per-example `loss(output, target)`.
      objective: what to minimize instead of `loss` (see fdl.objectives).
      step: a custom `step(state, batch) -> (state, logs)` doing the whole update;
        logs["loss"] is required (NaN detection); fdl counts the steps.
      input_shape: the model's per-example input shape, when the batch does not
        show it (a dict batch); default: x's of a tuple batch or a bare array.
      optimizer: a name, a dict for fdl.optim.make_optimizer, or an optax transformation.
      epochs: total epochs; with `state` given, training resumes from its step.
      batch_size: examples per step.
      metrics: names (fdl.metrics.get_metric) or Metric objects, computed exactly
        over the epoch's training examples and over `val` (from the objective's
        predictions, `fdl.objectives.PREDICTIONS`).
      callbacks: fdl.train.callbacks objects or plain `fn(epoch, logs)`.
      seed: the run's seed (initialization, dropout, augmentation, data order).
      augment: per-example `(key, x) -> x` applied inside the compiled step
        (train only) to x of a tuple batch, a bare array, or each example of a dict.
      state: a TrainState to resume from (e.g. from fdl.load_checkpoint).
      fused: run each epoch as one `lax.scan` (default) or step from the host.
      placement: "device" (upload the data once), "host" (stream batches), or
        "auto": the device when the data takes at most half its free memory.
      per_example: feed the optimizer per-example gradients (DP-SGD through optax).
      mesh: data parallelism (fdl.train.mesh): an int N or "all" (the first N local
        devices), or a `jax.sharding.Mesh` with an axis "data". Each batch is split
        over the devices (batch_size a multiple of their number), the state is
        replicated, and the numbers are one device's to float rounding. None: one device.
      shard_params: with a mesh, "fsdp" splits the params and optimizer state over
        the devices too (each holds ~1/N; fdl.train.mesh); None keeps them replicated.
      precision: "float32", "bfloat16", "float16", "mixed_bfloat16" or
        "mixed_float16" (fdl.train.precision): mixed keeps params and optimizer
        state in float32 and computes in the low dtype; float16 adds dynamic
        loss scaling (a step with non-finite gradients is skipped, the scale lowered).
      eval_batch_size: batch size of validation passes.
      verbose: 0 quiet, 1 progress bar on a terminal, 2 also one line per epoch otherwise.

    Returns:
      (state, history): the final TrainState (or the best one if an
      EarlyStopping callback restores it) and a History of per-epoch logs.

    A first SIGINT (Ctrl-C) or SIGTERM lets the epoch (or, with a callback
    acting every N steps, the chunk of N steps) finish and the callbacks end
    (a ModelCheckpoint writes its checkpoint), then raises
    TrainingInterrupted; a second acts at once (fdl.train.interrupt).

    Raises:
      NonFiniteLossError: a step's loss was NaN/Inf; `.state` is the last finite state.
      TrainingInterrupted: a KeyboardInterrupt, after SIGINT/SIGTERM (see above).
    """
    started = time.perf_counter()
    use_compilation_cache()
    if val is None and hasattr(train, "val") and getattr(train, "val") is not None:
        val = train.val
    stream = train if isinstance(train, NpyStream) else None
    epochs, tx, mode = check_positive_int("epochs", epochs), as_optimizer(optimizer), get_precision(precision)
    eval_batch_size = check_positive_int("eval_batch_size", eval_batch_size)
    if mode.name != "float32" and step is not None:
        raise ValueError(f"precision: {precision!r} casts inside fdl's step — a custom step= does its own "
                         "arithmetic: cast in it (fdl.train.precision.cast_floating) and keep precision='float32'")
    if mode.param_dtype != jnp.float32:  # pure low precision: the optimizer's arithmetic in float32
        tx = updates_in_float32(tx)
    if mode.scales_loss:
        tx = dynamic_loss_scale(tx)
    supervised_path = objective is None and step is None
    loss_fn = get_loss(loss) if supervised_path else None
    _check_model_arguments(model, step=step, state=state, objective=objective, metrics=metrics,
                           augment=augment, per_example=per_example)
    # Every array is checked against the model once, up front (streamed batches as they are read).
    if supervised_path:
        x, y = (stream.x, stream.y) if stream is not None else as_arrays(train)
        input_shape = example_shape(x)  # a dict of shapes for a model's dict of inputs
        n, _, checked_y = check_data("train", model, x, y, loss=loss_fn, finite=stream is None,
                                     params=None if state is None else state.params)
        data = (x, y if stream is not None else checked_y)
    else:
        data = (stream.x, stream.y) if stream is not None else as_examples(train)
        n = check_example_tree("train", data)
        input_shape = as_shape(input_shape) if input_shape is not None else _default_input_shape(data)
    batch_size = check_positive_int("batch_size", batch_size, maximum=n)
    mesh = as_mesh(mesh)
    if mesh is not None:
        check_divisible("batch_size", batch_size, mesh)
    elif shard_params is not None:
        raise ValueError(f"shard_params: {shard_params!r} shards over a mesh — pass mesh= (e.g. mesh='all')")
    val_data = _validation(model, val, supervised_path=supervised_path, loss_fn=loss_fn,
                           input_shape=input_shape, objective=objective)
    metric_list = metrics_for(model, input_shape, metrics) if metrics else ()
    if state is None:
        if model is None or input_shape is None:
            raise ValueError("input_shape: the batch does not show the model's per-example input "
                             "shape (a dict batch) — pass input_shape=, or a state= to train")
        pure = mode.param_dtype != jnp.float32  # pure low precision: the params and the optimizer state too
        state = init_train_state(model, input_shape, tx, seed, param_dtype=mode.param_dtype if pure else None,
                                 opt_state_dtype=mode.state_dtype if pure else None)
    state_shardings = None if mesh is None else state_sharding(state, mesh, shard_params)
    if state_shardings is not None:
        state = place(state, state_shardings)
    train_step = make_custom_step(step) if step is not None else make_train_step(
        model, loss_fn, tx, objective=objective, augment=augment, per_example=per_example, precision=mode)
    if shard_params is not None:  # every step's new state keeps the split it was given
        train_step = constrain_state(train_step, state_shardings)
    if placement == "auto":
        placement = "host" if stream is not None or not fits_on_device(data) else "device"
    if placement == "device":
        epoch_runner = device_epochs(train_step, batch_size, metric_list, fused, data, mesh=mesh)
    elif placement == "host":
        epoch_runner = host_epochs(train_step, batch_size, metric_list, data, stream, mesh=mesh)
    else:
        raise ValueError(f"fit: placement must be 'auto', 'device' or 'host', got {placement!r}")
    steps_per_epoch = epoch_runner.steps_per_epoch
    # Owned by this run: one compiled validation program for every epoch, its split staged once.
    evaluator = staged_val = None
    if val_data is not None:
        evaluator = Evaluator(model, loss=loss_fn, objective=objective, metrics=metric_list,
                              batch_size=eval_batch_size)
        staged_val = evaluator.stage(*(val_data if supervised_path else (val_data,)),
                                     sharding=None if mesh is None else replicated(mesh))

    def validate(new_state: TrainState):
        """The validation scores of `new_state`, queued (None without val)."""
        if evaluator is None:
            return None
        return evaluator.evaluate_staged(new_state.params, new_state.model_state, staged_val, new_state.step)

    handlers = [ProgressBar(verbose)] + [as_callback(c) for c in callbacks]
    # Callbacks that act mid-epoch (ModelCheckpoint(every_steps=N)) cut every epoch into chunks.
    chunk = math.gcd(*(h.every_steps for h in handlers if h.every_steps)) or steps_per_epoch
    chunked = chunk < steps_per_epoch
    run = Run(model=model, state=state, epochs=epochs, steps_per_epoch=steps_per_epoch, history=History(),
              epoch=int(state.step) // steps_per_epoch, callbacks=handlers,
              progress_shapes=lambda: jax.eval_shape(lambda: epoch_runner.begin(run.state, 0)))
    # A callback that saves the run (ModelCheckpoint) begins first, as it may restore the run
    # from a checkpoint; it ends each epoch last, so it saves what every other callback decided.
    savers = [handler for handler in handlers if handler.saves_run]
    others = [handler for handler in handlers if not handler.saves_run]
    clock, host_seconds, interrupted = CompileClock(), 0.0, None

    def in_chunks(state: TrainState, epoch: int, progress):
        """The epoch from `progress` (None: its start) in chunks of `chunk` steps, each chunk's
        end shown to the callbacks (`on_chunk_end`, run.progress) while the next one runs.

        Returns (new_state, summary, scores), or None when a signal stopped the epoch
        mid-way (run.progress then holds its last finite chunk, for the savers to keep).
        """
        nonlocal interrupted
        start = 0 if progress is None else int(progress.done)
        stops = [stop for stop in range(chunk, steps_per_epoch, chunk) if stop > start] + [steps_per_epoch]
        current = epoch_runner.advance(epoch_runner.begin(state, epoch) if progress is None else progress,
                                       epoch, start, stops[0])
        for stop, next_stop in zip(stops, stops[1:]):
            # the next chunk runs while the callbacks see this one, unless its steps reuse (donate) its buffers
            ahead = None if epoch_runner.donates else epoch_runner.advance(current, epoch, stop, next_stop)
            if epoch_runner.is_finite(current):  # a failed chunk is never kept; the epoch's end names its step
                run.progress = current
                for handler in others + savers:
                    handler.on_chunk_end(run)
            interrupted = received()
            if interrupted is not None:
                return None
            current = ahead if ahead is not None else epoch_runner.advance(current, epoch, stop, next_stop)
        run.progress = None
        new_state, summary = epoch_runner.finish(current)
        return new_state, summary, validate(new_state)

    def dispatch(state: TrainState, epoch: int, progress=None):
        """The epoch and its validation: queued on the device as a whole (nothing waits for them
        here), or run chunk by chunk when callbacks act mid-epoch or the epoch is part-done."""
        if chunked or progress is not None:
            return in_chunks(state, epoch, progress)
        new_state, summary = epoch_runner.run(state, epoch)
        return new_state, summary, validate(new_state)

    with graceful_interrupts() as received:
        try:
            for handler in savers + others:
                handler.on_train_begin(run)
            epoch, progress = run.epoch, run.progress
            # where a replay of the epoch would start: the state the epoch (or its resumed part) began from
            origin = (run.state if progress is None else progress.state, 0 if progress is None else int(progress.done))
            pending = dispatch(run.state, epoch, progress) if epoch < epochs else None
            run.history.timing["first_step_s"] = time.perf_counter() - started
            arrived = time.perf_counter()
            while pending is not None:
                new_state, summary, scores = pending
                # The next epoch is queued before this one's logs are read, so the device
                # trains while the host runs the callbacks. It starts from this epoch's
                # state; if a callback changes the state (a new learning rate) or stops,
                # it is dropped and the numbers are those of waiting. (An epoch in chunks
                # waits for its callbacks between chunks, so it is not queued ahead.)
                ahead = dispatch(new_state, epoch + 1) if epoch + 1 < epochs and not chunked else None
                summary, scores = jax.device_get((summary, scores))  # the epoch's one read
                seconds, arrived = time.perf_counter() - arrived, time.perf_counter()
                if not summary.pop("finite"):
                    good_state, bad = epoch_runner.replay(origin[0], epoch, origin[1])
                    raise NonFiniteLossError(epoch + 1, origin[1] + int(bad) + 1, int(good_state.step) + 1,
                                             good_state, run.history)
                run.state, run.epoch = new_state, epoch + 1
                logs = {"epoch": epoch + 1, **to_python(summary)}
                if scores is not None:
                    logs.update({f"val_{k}": v for k, v in to_floats(scores).items()})
                logs.update(time_s=seconds, steps_per_s=(steps_per_epoch - origin[1]) / seconds)
                run.history.append(logs)
                for handler in others + savers:
                    handler.on_epoch_end(run, epoch + 1, logs)
                interrupted = received()  # the savers' on_train_end writes the checkpoint
                run.stop_training |= interrupted is not None
                host_seconds += time.perf_counter() - arrived
                epoch += 1
                if run.stop_training or epoch >= epochs:
                    break
                origin = (run.state, 0)
                pending = ahead if ahead is not None and run.state is new_state else dispatch(run.state, epoch)
        finally:
            for handler in savers + others:  # savers first: they save the last epoch's state
                handler.on_train_end(run)
            run.history.timing.update(compile_s=clock.seconds(), callbacks_s=host_seconds,
                                      fit_s=time.perf_counter() - started)
            clock.close()
    if interrupted is not None and run.epoch < epochs:
        if run.progress is None:
            raise TrainingInterrupted(interrupted, run.epoch, run.state, run.history)
        raise TrainingInterrupted(interrupted, run.epoch, run.progress.state, run.history, int(run.progress.done))
    return run.state, run.history


def evaluate(model: Layer, state: TrainState, data, *, loss="cross_entropy",
             metrics: Sequence = ("accuracy",), batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> dict:
    """Loss and metrics of `state`'s model over `data` ((x, y), a Split, or a Dataset's test split).

    Exact over the whole split. Each call compiles its program once; to evaluate
    repeatedly, keep an `fdl.train.Evaluator` (or a loaded run, `fdl.load_run`).
    """
    x, y = as_arrays(data, "test")
    loss = None if loss is None else get_loss(loss)
    _, out_shape, y = check_data("evaluate", model, x, y, loss=loss, params=state.params)
    evaluator = Evaluator(model, loss=loss,
                          metrics=get_metrics(metrics, infer_num_classes(out_shape)), batch_size=batch_size)
    return evaluator.evaluate(state.params, state.model_state, x, y)


def predict(model: Layer, state: TrainState, x, *, batch_size: int = DEFAULT_EVAL_BATCH_SIZE) -> np.ndarray:
    """Model outputs (logits for classifiers) for every row of x: (n, *input_shape), eval mode.

    x may be a dict of such arrays for a model that takes a dict of inputs (every
    leaf with the same n; checked like any x by `fdl.train.checks.check_data`)."""
    x = host_examples(x)
    check_data("predict", model, x, params=state.params)
    evaluator = Evaluator(model, batch_size=batch_size)
    return evaluator.predict(state.params, state.model_state, x)
