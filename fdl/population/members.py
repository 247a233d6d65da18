"""Populations: many members of one model trained as ONE compiled program per epoch.

Members differ in seed (initialization, dropout, augmentation, data order) and
in any hyperparameter the optimizer injects (`optax.inject_hyperparams`:
learning rate, weight decay, momentum, b1, b2, ...). Those values are arrays in
each member's optimizer state, so a new value never recompiles anything.

Each epoch is one call of a compiled function that, for every member, runs its
fused training epoch (`fdl.train.make_train_epoch`) and evaluates it on the
validation split. How the members share the device is the *strategy*:

* "vmap": all members at once, vectorized — the default ("auto"): measured
  fastest even on a 2-core CPU (experiments/benchmark_population.py).
* "map": one member after another inside the same program (`lax.map`); a
  stopped member costs nothing here.
* "chunks of K": `lax.map` over vmapped chunks of K members (`max_members`),
  to bound memory.

With several devices the members are split across them: the population's
mesh (`population_mesh`) has an axis "population", and the epoch is one
`shard_map` manual over that axis only, each slice of it running its members
with the strategy above. By default the mesh is every device on
"population", one member's batch on one device. With `mesh=D` (or a Mesh
with axes ("population", "data")) each member spans D devices on a second
axis "data" (`fdl.train.mesh.DATA_AXIS`), the population axis holding the
rest (len(jax.devices()) // D): inside its slice a member's every batch is
constrained to split its examples over "data"
(`jax.lax.with_sharding_constraint`) and XLA's SPMD partitioner does the
rest, as `fit(mesh=...)` does: the gradient all-reduce over "data", BatchNorm
statistics and metrics over the member's global batch. The state and the
data are replicated over "data"; no hand-written collective anywhere.

    population = Population(model, optimizer={"name": "sgd"}, batch_size=64, mesh=2)
    # 4 devices: 2 (population) x 2 (data); 32 examples of each batch per device

Member i's numbers equal a standalone `fdl.fit` with the same seed and
hyperparameters (on one device or on a D-device mesh), up to float rounding.

What each member minimizes is a per-example `loss` on `(x, y)`, or an
`objective` (fdl.objectives) on any batch: a pytree of arrays with a shared
leading example axis (`(x, y)`, a dict `{"tokens": ..., "mask": ...}`, a bare
`x`). An objective's logs are averaged per epoch and its validation scores come
from `fdl.train.evaluate`'s objective accumulation, as in `fit`.

Or each member runs a user's whole `step(state, batch) -> (state, logs)`, as
`fit(step=...)` does (`fdl.train.step.make_custom_step`: fdl counts the steps
and watches logs["loss"]), from the model's init or from a user's `init(seed)
-> TrainState` (several models: a GAN). The step updates with one shared
optax transformation; each member's hyperparameters are arrays in its own
optimizer state (`fdl.optim.set_hyperparameter`), so one step serves them all.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from typing import Callable, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from fdl.data.dataset import as_arrays, as_examples
from fdl.io import to_python
from fdl.losses import get_loss
from fdl.nn.core import Layer, as_shape
from fdl.objectives import Objective
from fdl.population.hyperparameters import (base_optimizer, check_settable, set_member_hyperparameter,
                                            varied_hyperparameters, with_hyperparameters)
from fdl.population.mesh import AXIS, pad_members, population_mesh, shard_population, split_batches
from fdl.optim import current_learning_rate, get_hyperparameter, make_optimizer
from fdl.train.callbacks import Callback, Monitor
from fdl.train.checks import check_data, check_example_tree, check_positive_int, example_shape
from fdl.data.order import batch_indices
from fdl.train.epoch import make_train_epoch, num_examples
from fdl.train.evaluate import Evaluator
# The input shape a batch shows (x of a tuple, a bare array) is fit's, so a member inits as fit does.
from fdl.train.fit import _default_input_shape, metrics_for
from fdl.train.mesh import DATA_AXIS, check_divisible, place, replicated
from fdl.train.state import TrainState, data_key, init_train_state
from fdl.train.step import make_custom_step, make_train_step

__all__ = ["MemberSpec", "PopulationResult", "Population", "train_population", "evaluate_population",
           "make_population_epoch", "default_strategy", "population_mesh"]

@dataclasses.dataclass(frozen=True)
class MemberSpec:
    """One member: its seed and its injected optimizer hyperparameters."""

    seed: int
    # e.g. {"learning_rate": 3e-3}; with several models {"generator/learning_rate": 2e-4, ...} per model
    hyperparams: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class PopulationResult:
    members: list[MemberSpec]
    histories: list[list[dict]]      # per member, per epoch logs
    best_epoch: list[int]            # per member, 1-based, by `monitor`
    best: list[dict]                 # per member: the logs of its best epoch
    final: list[dict]                # per member: the logs of its last trained epoch
    stopped_epoch: list[int | None]  # early-stopped, pruned or diverged at (None: all epochs)
    pruned: list[bool]
    best_states: TrainState          # leading population axis: each member at its best epoch
    states: TrainState               # leading population axis: each member as it ended
    strategy: str
    wall_time_s: float


def default_strategy() -> str:
    """"vmap": measured fastest here (experiments/benchmark_population.py, 32 MNIST-1D MLPs on
    2 CPU cores: vmap 5,663 model-steps/s, members one after another 5,379; hand-written
    vmapped scans 1.09-1.20x hand-written sequential scans). Use "map" or `max_members`
    when the vectorized population does not fit in memory."""
    return "vmap"


def _map_batch_size(strategy: str, population: int, max_members: int | None) -> int | None:
    """`lax.map`'s batch_size for a strategy: None = one at a time, population = all vmapped."""
    if strategy == "auto":
        strategy = default_strategy()
    if strategy == "vmap":
        return population if max_members is None else min(max_members, population)
    if strategy == "map":
        return None
    raise ValueError(f"population strategy: expected 'auto', 'vmap' or 'map', got {strategy!r}")


def strategy_label(batch_size: int | None, population: int) -> str:
    if batch_size is None or batch_size == 1:
        return "map"
    return "vmap" if batch_size >= population else f"chunks of {batch_size}"


def make_population_epoch(model: Layer | None, loss, tx, *, batch_size: int, metrics=(), augment=None,
                          map_batch_size: int | None, evaluator: Evaluator | None,
                          objective: Objective | None = None, step=None, data_axis: str | None = None):
    """`epoch(states, active, data, indices, val) -> (states, logs, train_metrics, val_scores, lr)`.

    Every output has a leading population axis; `logs` maps "loss" and the
    objective's (or the step's) log names to (population, steps) per-step
    values; `lr` is None when the optimizer state injects no learning rate.
    Members whose `active` is False keep their state. `data` is the training
    split, `(x, y)` for a `loss`, any pytree with an example axis for an
    `objective` or a `step` (`loss` None); `indices` (population, steps,
    batch_size) int32 holds each member's `fdl.data.batch_indices` of the
    epoch. `val` is None, or the validation split staged by `evaluator`
    (`fdl.train.Evaluator.stage`), which scores every member with
    `Evaluator.staged_scores`. A custom `step(state, batch) -> (state, logs)`
    replaces the loss/objective step (`tx` and `augment` unused). With
    `data_axis` (a mesh axis the caller's `shard_map` leaves automatic) every
    batch a member steps on is split over it.
    """
    train_step = make_custom_step(step) if step is not None else make_train_step(
        model, loss, tx, objective=objective, augment=augment)
    if data_axis is not None:
        train_step = split_batches(train_step, data_axis)
    train_epoch = make_train_epoch(train_step, batch_size, metrics)

    def member(args, data, val):
        state, active, rows = args

        def train(state):
            new_state, logs, train_metrics = train_epoch(state, data, rows)
            scores = {} if evaluator is None else evaluator.staged_scores(new_state.params, new_state.model_state,
                                                                          val, new_state.step)
            return new_state, logs, train_metrics, scores

        def skip(state):  # a stopped member: its state stays, its logs are zeros
            shapes = jax.eval_shape(train, state)
            return (state, *jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1:]))

        # With "map" a stopped member costs nothing; under vmap cond becomes a select.
        new_state, logs, train_metrics, scores = jax.lax.cond(active, train, skip, state)
        return new_state, logs, train_metrics, scores, _learning_rate(new_state.opt_state)

    def epoch_fn(states, active, data, indices, val):
        one = functools.partial(member, data=data, val=val)
        population = jax.tree.leaves(states)[0].shape[0]
        if map_batch_size is not None and map_batch_size >= population:
            return jax.vmap(one)((states, active, indices))  # lax.map's one-chunk scan would add copies
        return jax.lax.map(one, (states, active, indices), batch_size=map_batch_size)

    return epoch_fn


def _learning_rate(opt_state):
    """The learning rate to log, or None for a plain optax state (fit logs none then either)."""
    try:
        return current_learning_rate(opt_state)
    except ValueError:
        return None


def _member_logs(i, epoch, steps, step_logs, train_metrics, val_scores, learning_rate) -> dict:
    """Member i's epoch logs as `fit` writes them: the mean of every per-step log ("loss" first)."""
    logs = {"epoch": epoch, "step": steps, "loss": float(np.mean(step_logs["loss"][i]))}
    logs.update({k: float(np.mean(v[i])) for k, v in step_logs.items() if k != "loss"})
    logs.update({k: to_python(v[i]) for k, v in train_metrics.items()})
    logs.update({f"val_{k}": to_python(v[i]) for k, v in val_scores.items()})
    if learning_rate is not None:
        logs["learning_rate"] = float(learning_rate[i])
    return logs


class MemberRun:
    """One member's view for its callbacks: the `fdl.train.callbacks.Run` methods over its slice.

    Hyperparameter changes and snapshots are collected during the epoch's
    callbacks and applied to the stacked states afterwards in one call each;
    a snapshot holds the member's state before this epoch's hyperparameter
    changes. A member keeps at most one snapshot (its early stopping's best).
    """

    def __init__(self, book: "_Bookkeeping", index: int):
        self.book, self.index = book, index
        self.model, self.epochs = book.model, book.epochs
        self.steps_per_epoch, self.history = book.steps_per_epoch, book.histories[index]
        self.stop_training = False

    @property
    def state(self):
        raise TypeError("a population member's callback cannot read or replace the whole state — "
                        "use run.hyperparameter/set_hyperparameter/snapshot/restore, or train it with fdl.fit")

    def hyperparameter(self, name: str) -> float:
        return float(self.book.hyperparameters(name)[self.index])

    def set_hyperparameter(self, name: str, value: float) -> None:
        self.book.pending.setdefault(name, {})[self.index] = value

    def snapshot(self):
        self.book.keep[self.index] = True
        return self.index

    def restore(self, snapshot) -> None:
        self.book.restore[self.index] = True


class _Bookkeeping:
    """The host side of one `Population.train` call: histories, per-member callbacks, masks."""

    def __init__(self, model, population: int, epochs: int, steps_per_epoch: int, callbacks):
        self.model, self.epochs, self.steps_per_epoch = model, epochs, steps_per_epoch
        self.histories = [[] for _ in range(population)]
        self.keep, self.restore = np.zeros(population, bool), np.zeros(population, bool)
        self.pending: dict[str, dict[int, float]] = {}
        self.runs = [MemberRun(self, i) for i in range(population)]
        self.callbacks = [list(callbacks()) if callbacks else [] for _ in range(population)]
        self.states = None
        self._values: dict[str, np.ndarray] = {}

    def hyperparameters(self, name: str) -> np.ndarray:
        """(population,) current values of an injected hyperparameter, read once per epoch."""
        if name not in self._values:
            self._values[name] = np.asarray(get_hyperparameter(self.states.opt_state, name))
        return self._values[name]

    def new_epoch(self, states) -> None:
        self.states, self._values = states, {}
        self.keep[:] = False

    def changed_hyperparameters(self) -> dict[str, np.ndarray]:
        """name -> (population,) values with this epoch's callback changes applied; clears them."""
        changes = {}
        for name, per_member in self.pending.items():
            values = np.array(self.hyperparameters(name), np.float32)
            values[list(per_member)] = list(per_member.values())
            changes[name] = values
        self.pending = {}
        return changes


def _select(keep, new, old):
    """Per member: `new` where keep[i], else `old` (stacked TrainStates)."""
    return jax.tree.map(lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old)


def _check_minimized(model, *, loss, objective, step, init, optimizer, augment, metrics) -> None:
    """One-line errors for what a population cannot minimize, or for arguments that do not go together
    (a custom step does the whole update, as in `fit`)."""
    default_loss = isinstance(loss, str) and loss == "cross_entropy"
    if objective is not None and not default_loss:
        raise ValueError("loss/objective: both given — give one: the objective replaces the loss "
                         "(fdl.objectives.supervised(loss) is the per-example loss as an objective)")
    if step is not None and not default_loss:
        raise ValueError("loss/step: both given — a custom step computes its own loss; drop loss= "
                         "(with a step, objective= only scores val)")
    if step is not None and augment is not None:
        raise ValueError("step: a custom step does the whole update — augment its batch inside it "
                         "(augment= applies to loss= and objective=)")
    if model is None:
        if step is None or init is None:
            raise ValueError("model: None trains only with a custom step= and its init= "
                             "(init(seed) -> fdl.init_train_state(models, input_shapes, optimizers, seed)) "
                             "— pass the Layer")
        if objective is not None or metrics:
            raise ValueError("objective/metrics: they need the model, and Population(None, ...) has none — "
                             "log what you measure from the custom step instead")
    if step is not None and init is not None:
        if optimizer is not None:
            raise ValueError("optimizer: unused with step= and init= — init(seed)'s state holds the optimizer "
                             "states and the step applies them; drop optimizer=")
    elif optimizer is None:
        raise ValueError("optimizer: missing — give fdl.optim.make_optimizer keyword arguments such as "
                         "{'name': 'adam'}, or an optax transformation")
    if optimizer is not None and not isinstance(optimizer, (Mapping, str, optax.GradientTransformation)):
        raise TypeError("optimizer: expected fdl.optim.make_optimizer keyword arguments such as {'name': 'adam'}, "
                        f"a name or an optax transformation, got {type(optimizer).__name__}")


def _input_shape(role: str, data, input_shape) -> tuple | dict:
    """The model's per-example input shape (a dict of them for a model's dict of inputs):
    `input_shape`, or what the batch shows (as in fit)."""
    shape = input_shape if input_shape is not None else _default_input_shape(data)
    if shape is None:
        raise ValueError(f"input_shape: the {role} batch does not show the model's per-example input "
                         "shape (a dict batch) — pass input_shape=")
    return as_shape(shape)


def _shape_key(input_shape) -> str:
    """A per-example input shape (a tuple, a dict of them, or None) as a key of the compiled programs."""
    return json.dumps(input_shape, sort_keys=True)


class Population:
    """Trains populations of one model (loss, objective or custom step, optimizer, batch size,
    metrics, strategy) and owns their compiled programs: training the next population of the
    same kind — the next batch of a sweep's trials, new seeds or new hyperparameter values —
    compiles nothing new.

    Example:
      >>> population = Population(model, loss="cross_entropy", optimizer={"name": "adam"},
      ...                         batch_size=100, metrics=["accuracy"])
      >>> members = [MemberSpec(seed, {"learning_rate": lr}) for lr in (1e-3, 1e-2) for seed in range(2)]
      >>> result = population.train((x, y), (x_val, y_val), members=members, epochs=2,
      ...                           monitor="val_accuracy")
      >>> test_scores = population.evaluate(result.states, (x_test, y_test))
      >>> len(test_scores), sorted(test_scores[0])
      (4, ['accuracy', 'loss'])

      A custom step (as `fit(step=...)`) updates with the transformation given as
      `optimizer=`; each member's learning rate lives in its own optimizer state:
      >>> tx = fdl.optim.make_optimizer("sgd")
      >>> batch_loss = fdl.train.step.make_loss_fn(model, fdl.losses.cross_entropy)
      >>> def step(state, batch):
      ...     (loss, _), grads = jax.value_and_grad(batch_loss, has_aux=True)(
      ...         state.params, state.model_state, *batch, fdl.train.state.step_key(state))
      ...     updates, opt_state = tx.update(grads, state.opt_state, state.params)
      ...     return state.replace(params=optax.apply_updates(state.params, updates),
      ...                          opt_state=opt_state), {"loss": loss}
      >>> population = Population(model, step=step, optimizer=tx, batch_size=100)
      >>> result = population.train((x, y), members=[MemberSpec(0, {"learning_rate": 0.1}),
      ...                                            MemberSpec(1, {"learning_rate": 0.01})], epochs=2)
      >>> [round(h[-1]["learning_rate"], 6) for h in result.histories]
      [0.1, 0.01]

    Args:
      model, loss, objective, augment, batch_size, metrics, eval_batch_size: as in
        `fdl.fit`; give `loss` (a per-example loss on `(x, y)` batches),
        `objective` (fdl.objectives, on any pytree batch) or `step`, not two
        (with a `step`, an `objective` only scores `val`, as in `fit`). `model`
        may be None with `step` and `init` (then no objective or metrics).
      optimizer: `fdl.optim.make_optimizer` keyword arguments shared by all members
        (only the hyperparameters members vary are injected), or an optax
        transformation used as it is for every member (members' hyperparameters
        are set in each one's optimizer state, so it must inject them:
        `fdl.optim.make_optimizer` injects every float it is given). With `step`
        or `init` a dict is `fdl.optim.make_optimizer(**optimizer)`, the very
        transformation to update with. Not given with both `step` and `init`.
      strategy: "auto", "vmap" or "map" (see the module docstring); `max_members`
        caps how many members are vectorized at once ("chunks of K").
      step: a custom `step(state, batch) -> (state, logs)` doing each member's whole
        update inside the compiled population epoch, exactly as `fit(step=...)`:
        logs["loss"] is required (NaN detection), the other logs are averaged per
        epoch; fdl counts the steps and gives the data order and `step_key`.
        Member states init as `fdl.init_train_state(model, input_shape, tx, seed)`
        with `tx` the `optimizer`'s transformation, which the step must update with.
      init: `init(seed) -> TrainState` used instead of the model's init, e.g.
        `lambda seed: fdl.init_train_state(models, input_shapes, optimizers, seed)`
        for several models (a GAN); `seed` is a traced int32 scalar (members
        init vmapped). A member hyperparameter is set in every optimizer state it
        holds, and each must inject it; "<model>/<name>" (a GAN's
        "generator/learning_rate") sets it in that model's optimizer only.
      mesh: how members share the devices (`population_mesh`): None, every device
        on "population", one member a device; an int D, each member's batch split
        over D devices on "data" (as `fit(mesh=D)`), the population over the rest;
        or a Mesh with axes ("population", "data"). Members are padded to a
        multiple of the "population" axis (the padding dropped from the result).

    Raises:
      ValueError: two things to minimize, `augment` with a `step`, `model` None without
        `step` and `init`, a missing (or, with `step` and `init`, an unused) `optimizer`,
        a `mesh` that does not divide the devices, or a `batch_size` that does not
        split over its "data" axis.
    """

    def __init__(self, model: Layer | None, *, loss="cross_entropy", objective: Objective | None = None,
                 optimizer: dict | optax.GradientTransformation | None = None, batch_size: int,
                 metrics: Sequence = (), augment=None, strategy: str = "auto", max_members: int | None = None,
                 eval_batch_size: int = 512, step=None, init: Callable[[jax.Array], TrainState] | None = None,
                 mesh: Mesh | int | None = None):
        _check_minimized(model, loss=loss, objective=objective, step=step, init=init, optimizer=optimizer,
                         augment=augment, metrics=metrics)
        self.model, self.objective, self.step, self.init = model, objective, step, init
        if isinstance(optimizer, str):
            optimizer = {"name": optimizer}
        self.optimizer = dict(optimizer) if isinstance(optimizer, Mapping) else optimizer
        self.loss = get_loss(loss) if objective is None and step is None else None
        self.batch_size, self.metric_names, self.augment = batch_size, tuple(metrics), augment
        self.strategy, self.max_members, self.eval_batch_size = strategy, max_members, eval_batch_size
        # A dict alone is built per population, injecting only what its members vary (base_optimizer).
        # A user's step or init must update with the very transformation the states were made by: one
        # for every member, their values set in each state.
        self._per_population_optimizer = isinstance(self.optimizer, dict) and step is None and init is None
        if isinstance(self.optimizer, dict):
            self._shared_tx = None if self._per_population_optimizer else make_optimizer(**self.optimizer)
        else:
            self._shared_tx = self.optimizer  # a transformation, or None with both step and init
        self.mesh = population_mesh(mesh)
        # A "data" axis of one device splits nothing (and a one-device mesh has no shard_map to split in).
        self._data_axis = DATA_AXIS if self.mesh.shape.get(DATA_AXIS, 1) > 1 else None
        if self._data_axis is not None:
            check_divisible("batch_size", check_positive_int("batch_size", batch_size), self.mesh)
        # One device holds everything as before; on a mesh the data and val are replicated once.
        self._replicated = replicated(self.mesh) if self.mesh.size > 1 else None
        self._programs: dict = {}

    def _injection_fix(self) -> str:
        """How to make a member hyperparameter `{name}` settable, for `check_settable`'s error."""
        if self.init is not None:
            where = "build init's optimizers with"
        elif isinstance(self.optimizer, dict):
            return "give optimizer[{name!r}] a float (fdl.optim.make_optimizer injects every float it is given)"
        else:
            where = "build it with"
        return where + " fdl.optim.make_optimizer(..., {name}=<a float>), which injects every float it is given"

    def _metrics(self, input_shape):
        return metrics_for(self.model, input_shape, self.metric_names) if self.metric_names else ()

    def _evaluator(self, metrics=()) -> Evaluator:
        """The Evaluator of the members' loss (or objective): it stages splits and scores each member."""
        return Evaluator(self.model, loss=self.loss, objective=self.objective, metrics=metrics,
                         batch_size=self.eval_batch_size)

    def _splits(self, train, val, input_shape):
        """(training data on the device, val batches or None, input shape), checked as `fit` checks them."""
        if self.objective is None and self.step is None:
            x, y = as_arrays(train)
            _, _, y = check_data("train", self.model, x, y, loss=self.loss)
            input_shape, data = example_shape(x), (x, y)
            if val is not None:
                x_val, y_val = as_arrays(val, "val")
                y_val = check_data("val", self.model, x_val, y_val, loss=self.loss, expected_shape=input_shape)[2]
                val = self._evaluator().stage(x_val, y_val, sharding=self._replicated)
        else:
            data = as_examples(train)
            check_example_tree("train", data)
            if self.init is None or self.metric_names:  # the model's init and the metrics need it
                input_shape = _input_shape("train", data, input_shape)
            elif input_shape is not None:
                input_shape = as_shape(input_shape)
            if val is not None:
                if self.objective is None:
                    raise ValueError("val: a custom step has no validation objective — pass objective= as "
                                     "well (it scores val), or drop val")
                val = as_examples(val, "val")
                check_example_tree("val", val)
                val = self._evaluator().stage(val, sharding=self._replicated)
        return place(jax.tree.map(np.asarray, data), self._replicated), val, input_shape

    def _program(self, input_shape, base: dict | None, names: tuple, per_device: int, validate: bool,
                 members: Sequence[MemberSpec]):
        """(init, epoch, strategy label) compiled for this input shape, injected names and layout.

        `base`: the per-population optimizer arguments (`base_optimizer`), or None
        for the shared transformation; `members` only name a culprit in errors.
        """
        key = (_shape_key(input_shape), names if base is None else json.dumps(base, sort_keys=True), per_device, validate)
        if key not in self._programs:
            tx = self._shared_tx if base is None else make_optimizer(**base)
            map_batch_size = _map_batch_size(self.strategy, per_device, self.max_members)
            metrics = self._metrics(input_shape)

            def initial_state(seed) -> TrainState:
                if self.init is not None:
                    return self.init(seed)
                return init_train_state(self.model, input_shape, tx, seed)

            if base is None:  # the user's init or transformation: its state must take the members' values
                shapes = jax.eval_shape(initial_state, jnp.zeros((), jnp.int32))
                if not isinstance(shapes, TrainState):
                    raise TypeError(f"init: expected init(seed) -> fdl.TrainState (e.g. fdl.init_train_state("
                                    f"models, input_shapes, optimizers, seed)), got {type(shapes).__name__}")
                check_settable(shapes, names, members, self._injection_fix())
            epoch_fn = make_population_epoch(self.model, self.loss, tx, objective=self.objective,
                                             batch_size=self.batch_size, metrics=metrics, augment=self.augment,
                                             map_batch_size=map_batch_size,
                                             evaluator=self._evaluator(metrics) if validate else None,
                                             step=self.step, data_axis=self._data_axis)
            if self.mesh.size > 1:
                epoch_fn = shard_population(epoch_fn, self.mesh)

            def init_one(seed, member_values):
                state = initial_state(seed)
                for name in names:
                    state = set_member_hyperparameter(state, name, member_values[name])
                return state

            self._programs[key] = (jax.jit(jax.vmap(init_one)), jax.jit(epoch_fn),
                                   strategy_label(map_batch_size, per_device))
        return self._programs[key]

    def train(self, train, val=None, *, members: Sequence[MemberSpec], epochs: int, input_shape=None,
              callbacks: Callable[[], Sequence[Callback]] | None = None, monitor: str | None = None,
              mode: str = "auto",
              on_epoch_end: Callable[[int, list, np.ndarray], Iterable[int]] | None = None,
              verbose: int = 1) -> PopulationResult:
        """Trains every member; one compiled call per epoch for all of them (see `train_population`)."""
        members = list(members)
        if not members:
            raise ValueError("train_population: members is empty — give at least one MemberSpec")
        monitor = monitor or ("val_loss" if val is not None else "loss")
        epochs = check_positive_int("epochs", epochs)
        data, val_batches, input_shape = self._splits(train, val, input_shape)
        n = num_examples(data)
        check_positive_int("batch_size", self.batch_size, maximum=n)
        padded = pad_members(members, self.mesh.shape[AXIS])
        population, per_device = len(padded), len(padded) // self.mesh.shape[AXIS]
        if self._per_population_optimizer:
            base = fallback = base_optimizer(padded, self.optimizer)
            names = tuple(base["inject"])
        else:
            base, fallback = None, self.optimizer if isinstance(self.optimizer, dict) else {}
            names = varied_hyperparameters(padded, fallback)
        init, epoch_fn, strategy = self._program(input_shape, base, names, per_device, val is not None, members)
        seeds = jnp.asarray([m.seed for m in padded], jnp.int32)
        values = {n: jnp.asarray([m.hyperparams.get(n, fallback.get(n)) for m in padded], jnp.float32)
                  for n in names}
        states = init(seeds, values)
        if self.mesh.size > 1:  # each member on its slice of "population", replicated over "data"
            states = jax.device_put(states, NamedSharding(self.mesh, PartitionSpec(AXIS)))
        # (population, steps, batch_size): each member's rows of a batch split like its batch
        rows_sharding = None if self.mesh.size == 1 else NamedSharding(self.mesh, PartitionSpec(AXIS, None,
                                                                                               self._data_axis))
        steps_per_epoch = n // self.batch_size
        book = _Bookkeeping(self.model, population, epochs, steps_per_epoch, callbacks)
        trackers = [Monitor("train_population", monitor, mode) for _ in padded]
        best_epoch, stopped, pruned = [0] * population, [None] * population, [False] * population
        active = np.ones(population, bool)
        best_states = kept_states = states
        start = time.perf_counter()
        keys = np.asarray(data_key(states))  # (population, 2): each member's data order
        for epoch in range(epochs):
            indices = place(np.stack([batch_indices(key, epoch, n, self.batch_size) for key in keys]),
                            rows_sharding)
            states, step_logs, train_metrics, val_scores, lr = epoch_fn(
                states, jnp.asarray(active), data, indices, val_batches)
            step_logs, train_metrics, val_scores, lr = jax.device_get((step_logs, train_metrics, val_scores, lr))
            logs = [_member_logs(i, epoch + 1, (epoch + 1) * steps_per_epoch, step_logs, train_metrics,
                                 val_scores, lr) for i in range(population)]
            book.new_epoch(states)
            improved = np.zeros(population, bool)
            for i in np.flatnonzero(active):
                book.histories[i].append(logs[i])
                value = trackers[i].value(logs[i])
                if not np.isfinite(value) or not np.all(np.isfinite(step_logs["loss"][i])):
                    active[i], stopped[i] = False, epoch + 1  # diverged: keep its best state
                    continue
                if trackers[i].improved(value):
                    improved[i], best_epoch[i] = True, epoch + 1
                for callback in book.callbacks[i]:
                    callback.on_epoch_end(book.runs[i], epoch + 1, logs[i])
                if book.runs[i].stop_training:
                    active[i], stopped[i] = False, epoch + 1
            best_states = _select(jnp.asarray(improved), states, best_states)
            if book.keep.any():
                kept_states = _select(jnp.asarray(book.keep), states, kept_states)
            if book.pending:
                states = with_hyperparameters(states, book.changed_hyperparameters())
            if on_epoch_end is not None:
                for i in on_epoch_end(epoch + 1, logs[:len(members)], active[:len(members)].copy()):
                    if active[i]:
                        active[i], stopped[i], pruned[i] = False, epoch + 1, True
            if verbose >= 2:
                shown = [v.get(monitor) for v in logs[:len(members)]]
                print(f"epoch {epoch + 1}/{epochs}  active {int(active[:len(members)].sum())}/{len(members)}  "
                      f"best {monitor} {_best(shown, trackers[0].mode):.4g}", flush=True)
            if not active.any():
                break
        for i in range(population):
            for callback in book.callbacks[i]:
                callback.on_train_end(book.runs[i])
        if book.restore.any():
            states = _select(jnp.asarray(book.restore), kept_states, states)
        n, histories = len(members), book.histories
        return PopulationResult(
            members=members, histories=histories[:n], best_epoch=best_epoch[:n],
            best=[h[b - 1] if b else h[-1] for h, b in zip(histories[:n], best_epoch[:n])],
            final=[h[-1] for h in histories[:n]], stopped_epoch=stopped[:n], pruned=pruned[:n],
            best_states=jax.tree.map(lambda a: a[:n], best_states),
            states=jax.tree.map(lambda a: a[:n], states), strategy=strategy,
            wall_time_s=time.perf_counter() - start)

    def evaluate(self, states: TrainState, data, *, input_shape=None) -> list[dict]:
        """Each member's loss (or objective value and logs) and metrics on `data`; one compiled call.

        Args:
          states: stacked TrainStates, a leading population axis (`PopulationResult.states`).
          data: (x, y) or a Split for a loss; for an objective any pytree of arrays
            with a leading example axis (a Split or Dataset gives its `(x, y)`).
          input_shape: the per-example input shape, when an objective's batch does not
            show it and metrics need the model's output shape.
        """
        if self.objective is None and self.step is not None:
            raise ValueError("evaluate: a custom step has no objective to score the members with — give the "
                             "Population objective= (as fit's val needs)")
        if self.objective is None:
            x, y = as_arrays(data, "test")
            y = check_data("evaluate", self.model, x, y, loss=self.loss)[2]
            input_shape, batches = example_shape(x), self._evaluator().stage(x, y, sharding=self._replicated)
        else:
            data = as_examples(data, "test")
            check_example_tree("evaluate", data)
            input_shape = _input_shape("evaluate", data, input_shape) if self.metric_names else None
            batches = self._evaluator().stage(data, sharding=self._replicated)
        key = ("evaluate", _shape_key(input_shape))
        if key not in self._programs:
            evaluator = self._evaluator(self._metrics(input_shape))
            self._programs[key] = jax.jit(lambda states, batches: jax.lax.map(
                lambda m: evaluator.staged_scores(m.params, m.model_state, batches, m.step), states))
        scores = jax.device_get(self._programs[key](states, batches))
        population = jax.tree.leaves(states)[0].shape[0]
        return [{k: to_python(v[i]) for k, v in scores.items()} for i in range(population)]


def train_population(model: Layer | None, train, val=None, *, members: Sequence[MemberSpec],
                     loss="cross_entropy", objective: Objective | None = None,
                     optimizer: dict | optax.GradientTransformation | None = None, epochs: int,
                     batch_size: int, input_shape=None, metrics: Sequence = (),
                     callbacks: Callable[[], Sequence[Callback]] | None = None,
                     monitor: str | None = None, mode: str = "auto", strategy: str = "auto",
                     max_members: int | None = None,
                     on_epoch_end: Callable[[int, list, np.ndarray], Iterable[int]] | None = None,
                     augment=None, eval_batch_size: int = 512, step=None,
                     init: Callable[[jax.Array], TrainState] | None = None, mesh: Mesh | int | None = None,
                     verbose: int = 1) -> PopulationResult:
    """Trains every member of a population; one compiled call per epoch for all of them.

    Example:
      >>> members = [MemberSpec(seed, {"learning_rate": lr}) for lr in (1e-3, 1e-2) for seed in range(2)]
      >>> result = train_population(model, (x, y), (x_val, y_val), members=members,
      ...                           optimizer={"name": "adam"}, epochs=2, batch_size=100,
      ...                           metrics=["accuracy"], monitor="val_accuracy",
      ...                           callbacks=lambda: [fdl.callbacks.EarlyStopping("val_loss", patience=5)])
      >>> [len(history) for history in result.histories]
      [2, 2, 2, 2]

      An objective on any batch (here a bare array: an autoencoder); its logs are averaged per epoch:
      >>> autoencoder = nn.models.autoencoder(bottleneck=4, hidden=[16])
      >>> result = train_population(autoencoder, x, x_val, members=[MemberSpec(0), MemberSpec(1)],
      ...                           objective=fdl.objectives.reconstruction("mse"),
      ...                           optimizer={"name": "adam", "learning_rate": 1e-3}, epochs=1,
      ...                           batch_size=64, metrics=["mse"])
      >>> sorted(k for k in result.final[0] if "reconstruction" in k or "mse" in k)
      ['mse', 'reconstruction', 'val_mse', 'val_reconstruction']

      A GAN over seeds — a custom step on two models (as experiments/gan.py), each
      member's state from `init(seed)` (tests/population/test_custom_step.py runs it):

          init = lambda seed: fdl.init_train_state(nets, shapes, optimizers, seed)
          result = train_population(None, x, members=[MemberSpec(0), MemberSpec(1)],
                                    step=gan_step, init=init, epochs=2, batch_size=64)

    Args:
      model, train, val, loss, objective, input_shape, metrics, augment, batch_size, epochs,
        eval_batch_size: as in `fdl.fit`. With a per-example `loss`, `train` and `val`
        are (x, y) arrays or Splits; with an `objective` (not both) any pytree of arrays
        with a shared leading example axis — `(x, y)`, a dict `{"tokens": (n, T), "mask":
        (n, T)}`, a bare `x` (n, *input_shape) — and `input_shape` is needed when the
        batch does not show it (a dict). Each member is scored on `val` with the objective
        in eval mode; its logs (besides "loss") are averaged per epoch and logged, as in
        `fit`, and metrics come from its `fdl.objectives.PREDICTIONS`.
      members: the population; member i is `fit(..., seed=members[i].seed)` with
        `members[i].hyperparams` set on the optimizer (and the same callbacks), or
        with `init`, `fit(None, ..., step=step, state=init(seed))` with them set
        in its state.
      optimizer: `fdl.optim.make_optimizer` keyword arguments shared by all members,
        or an optax transformation (see `Population`).
      callbacks: a function returning fresh callbacks, called once per member, so
        every member has its own (EarlyStopping stops and restores it alone,
        ReduceLROnPlateau lowers its own learning rate). Callbacks act through
        the `Run` methods (hyperparameter, set_hyperparameter, snapshot, restore,
        stop_training); one that reads `run.state` is refused.
      monitor, mode: the logged quantity that picks each member's best epoch and
        `best_states` (default "val_loss", or "loss" without `val`).
      strategy, max_members: see `Population`.
      on_epoch_end: `fn(epoch, logs_per_member, active) -> member indices to stop`,
        e.g. Optuna pruning.
      step: a custom `step(state, batch) -> (state, logs)` doing each member's whole
        update, as in `fit(step=...)` (logs["loss"] required, the other logs averaged
        per epoch); it updates with the `optimizer`'s transformation (pass the optax
        transformation it closes over); `val` needs `objective=` to be scored.
      init: `init(seed) -> TrainState` instead of the model's init (several models:
        `fdl.init_train_state` with dicts); `seed` is traced. See `Population`.
      mesh: None (every device on "population"), D devices per member on "data",
        or a Mesh with axes ("population", "data"); see `Population`.
      verbose: 2 prints a line per epoch.

    Returns:
      A PopulationResult: `states` are what `fit` would return for each member
      (after its callbacks, e.g. restored to its early stopping's best).

    Raises:
      ValueError: two things to minimize (a non-default `loss` with an `objective` or
        a `step`), data that does not fit (as in `fit`), a dict batch without
        `input_shape`, `val` with a `step` but no `objective`, a step without
        logs["loss"], a member hyperparameter its state does not inject, a `mesh` that
        does not divide the devices, or a `batch_size` that does not split over its "data" axis.

    Each call builds its programs; a `Population` object keeps them across calls.
    """
    population = Population(model, loss=loss, objective=objective, optimizer=optimizer, batch_size=batch_size,
                            metrics=metrics, augment=augment, strategy=strategy,
                            max_members=max_members, eval_batch_size=eval_batch_size, step=step, init=init,
                            mesh=mesh)
    return population.train(train, val, members=members, epochs=epochs, input_shape=input_shape,
                            callbacks=callbacks, monitor=monitor, mode=mode, on_epoch_end=on_epoch_end,
                            verbose=verbose)


def _best(values, mode):
    finite = [v for v in values if v is not None and np.isfinite(v)]
    if not finite:
        return float("nan")
    return min(finite) if mode == "min" else max(finite)


def evaluate_population(model: Layer, states: TrainState, data, *, loss="cross_entropy",
                        objective: Objective | None = None, metrics: Sequence | None = None,
                        input_shape=None, batch_size: int = 512) -> list[dict]:
    """Each member's loss (or objective value and logs) and metrics on `data`; one compiled call.

    `data` and `input_shape` as in `Population.evaluate`; `metrics` defaults to
    ["accuracy"] with a loss and to none with an objective.
    """
    metrics = metrics if metrics is not None else ("accuracy",) if objective is None else ()
    population = Population(model, loss=loss, objective=objective, optimizer={}, batch_size=1,
                            metrics=metrics, eval_batch_size=batch_size)
    return population.evaluate(states, data, input_shape=input_shape)
