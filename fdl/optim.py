"""Optimizers and learning-rate schedules by name, all from optax.

Every float hyperparameter is injected with ``optax.inject_hyperparams``: it is
an array in the optimizer state, not a constant compiled into the step. So the
learning rate can be logged (``current_learning_rate``), changed between steps
without recompiling (``set_hyperparameter``, e.g. by ReduceLROnPlateau), and a
population sweep can ``vmap`` over it.

Schedules are MULTIPLIERS of the learning rate. ``make_optimizer(learning_rate=
1e-3, schedule={"name": "warmup_cosine", "warmup_steps": 100, "decay_steps":
1000})`` injects two hyperparameters::

    hyperparams["learning_rate"]             base (peak) rate: 1e-3, settable, sweepable
    hyperparams["learning_rate_multiplier"]  the schedule's value at the last step

and the step uses their product, which ``current_learning_rate`` returns. This
keeps the current rate readable from the state AND lets ``set_hyperparameter``
rescale a scheduled run (optax alone offers one or the other).

The transformation is, in order::

    MultiSteps(accumulate_steps)(inject_hyperparams(chain(
        clip_by_global_norm(clip_global_norm),   # on the raw (mean) gradient
        add_decayed_weights(weight_decay),       # only for optimizers without their own
        <optax alias>(learning_rate * learning_rate_multiplier, **hyper))))

Hyperparameters in the state are float32 whatever the params' dtype; bools, ints,
strings, ``None`` and callables (``nesterov``, adafactor's
``min_dim_size_to_factor``, masks, dtypes) are static arguments.
"""
import inspect
from typing import Any, Callable, Sequence, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fdl.errors import unknown_name_message

__all__ = ["make_optimizer", "make_schedule", "OPTIMIZERS", "Schedule", "MULTIPLIER",
           "current_learning_rate", "get_hyperparameter", "set_hyperparameter"]

Schedule = Callable[[jax.Array], jax.Array]

MULTIPLIER = "learning_rate_multiplier"

# Left out: lbfgs needs more than ``update(grads, state, params)`` (the loss value
# and function), which the engine's step does not pass; optimistic_adam is
# deprecated by optax in favour of optimistic_adam_v2.
_EXCLUDED = frozenset({"lbfgs", "optimistic_adam"})


def _optax_aliases() -> dict[str, Callable[..., optax.GradientTransformation]]:
    """Every public optax optimizer alias whose first argument is ``learning_rate``."""
    aliases = {}
    for name in dir(optax):
        factory = getattr(optax, name)
        skip = name.startswith(("_", "scale_by")) or name in _EXCLUDED
        if skip or inspect.isclass(factory) or not callable(factory):
            continue
        try:
            parameters = list(inspect.signature(factory).parameters)
        except (TypeError, ValueError):  # classes and builtins without a signature
            continue
        if parameters[:1] == ["learning_rate"]:
            aliases[name] = factory
    return aliases


OPTIMIZERS = _optax_aliases()

# name -> (optax schedule, arguments fixed so its peak/initial value is 1, defaults)
_SCHEDULES: dict[str, tuple[Callable[..., Schedule], dict, dict]] = {
    "constant": (optax.constant_schedule, {"value": 1.0}, {}),
    "cosine": (optax.cosine_decay_schedule, {"init_value": 1.0}, {}),
    "warmup_cosine": (optax.warmup_cosine_decay_schedule, {"peak_value": 1.0}, {"init_value": 0.0}),
    "exponential": (optax.exponential_decay, {"init_value": 1.0}, {}),
    "piecewise": (optax.piecewise_constant_schedule, {"init_value": 1.0}, {}),
    "linear": (optax.linear_schedule, {}, {"init_value": 1.0}),
}


def make_schedule(spec: Mapping[str, Any] | float) -> Schedule | float:
    """Builds a learning-rate MULTIPLIER schedule ``step -> factor`` from a spec.

    Values in the spec are fractions of the base learning rate: the peak (or
    initial) value is fixed at 1, so ``alpha``/``end_value``/``init_value`` are
    relative. The other keys are optax's own argument names:

    * ``constant`` (constant_schedule): no keys.
    * ``cosine`` (cosine_decay_schedule): decay_steps, alpha, exponent.
    * ``warmup_cosine`` (warmup_cosine_decay_schedule): warmup_steps, decay_steps,
      init_value (default 0), end_value, exponent.
    * ``exponential`` (exponential_decay): transition_steps, decay_rate,
      transition_begin, staircase, end_value.
    * ``piecewise`` (piecewise_constant_schedule): boundaries_and_scales
      ``{step: scale}`` (string keys from YAML are converted to ints).
    * ``linear`` (linear_schedule): end_value, transition_steps, init_value
      (default 1), transition_begin.

    Example:
      >>> schedule = make_schedule({"name": "cosine", "decay_steps": 100})
      >>> round(float(schedule(50)), 6)
      0.5

    Args:
      spec: a dict with ``name`` and the keys above, or a number (a constant
        multiplier, returned as a float).

    Returns:
      The schedule, or the float.

    Raises:
      ValueError: unknown schedule name, unknown or missing key, or a fixed key.
    """
    if not isinstance(spec, Mapping):
        return float(spec)
    arguments = dict(spec)
    name = arguments.pop("name", None)
    if name not in _SCHEDULES:
        raise ValueError(unknown_name_message("schedule", name, _SCHEDULES))
    schedule, fixed, defaults = _SCHEDULES[name]
    fixed_given = sorted(fixed.keys() & arguments.keys())
    if fixed_given:
        raise ValueError(
            f"schedule {name!r}: {fixed_given[0]!r} is fixed to 1 because schedules "
            "multiply learning_rate — set learning_rate instead"
        )
    _check_arguments(f"schedule {name!r}", arguments, schedule, exclude=fixed)
    if "boundaries_and_scales" in arguments:  # YAML mapping keys arrive as strings
        arguments["boundaries_and_scales"] = {
            int(step): scale for step, scale in arguments["boundaries_and_scales"].items()
        }
    try:
        return schedule(**fixed, **defaults, **arguments)
    except TypeError as error:
        raise ValueError(f"schedule {name!r}: {error}") from None


def _check_arguments(owner: str, arguments: Mapping, function: Callable, exclude=()) -> None:
    """Raises ValueError naming any key of ``arguments`` that ``function`` does not take."""
    valid = [name for name in inspect.signature(function).parameters if name not in exclude]
    for key in arguments:
        if key not in valid:
            raise ValueError(unknown_name_message(f"{owner} hyperparameter", key, valid))


def _is_injected(value: Any) -> bool:
    """True for a float hyperparameter (injected as a state array); others stay static."""
    if isinstance(value, (bool, int, np.bool_)):
        return False
    if isinstance(value, float):
        return True
    return isinstance(value, (jax.Array, np.ndarray)) and jnp.issubdtype(value.dtype, jnp.floating)


def _chain_factory(alias: Callable, parameter_names: list[str], own_weight_decay: bool) -> Callable:
    """An inner factory for ``inject_hyperparams`` taking exactly ``parameter_names``."""

    def factory(**hyper):
        learning_rate = hyper.pop("learning_rate") * hyper.pop(MULTIPLIER, 1.0)
        parts = []
        if "clip_global_norm" in hyper:
            parts.append(optax.clip_by_global_norm(hyper.pop("clip_global_norm")))
        if "weight_decay" in hyper and not own_weight_decay:
            parts.append(optax.add_decayed_weights(hyper.pop("weight_decay")))
        parts.append(alias(learning_rate=learning_rate, **hyper))
        return optax.chain(*parts)

    # inject_hyperparams reads the signature to decide what to inject.
    factory.__signature__ = inspect.Signature(
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in parameter_names]
    )
    return factory


def make_optimizer(
    name: str = "adam",
    *,
    learning_rate: float = 1e-3,
    schedule: Mapping[str, Any] | str | Schedule | None = None,
    clip_global_norm: float | None = None,
    weight_decay: float | None = None,
    accumulate_steps: int = 1,
    inject: Sequence[str] | None = None,
    **hyper: Any,
) -> optax.GradientTransformation:
    """Builds an optax optimizer by name with every float hyperparameter injected.

    Accepts the config form: ``make_optimizer(**{"name": "sgd", "learning_rate":
    0.1, "momentum": 0.9})``.

    Example:
      >>> optimizer = make_optimizer("adamw", learning_rate=3e-4, weight_decay=0.01,
      ...                            schedule={"name": "cosine", "decay_steps": 1000},
      ...                            clip_global_norm=1.0)
      >>> state = optimizer.init({"w": jnp.zeros(3)})
      >>> round(float(current_learning_rate(state)), 6)
      0.0003

    Args:
      name: an optax alias (``sorted(OPTIMIZERS)``): sgd, adam, adamw, nadam,
        adamax, radam, rmsprop, adagrad, adadelta, adafactor, lamb, lars, lion,
        novograd, sm3, yogi, fromage, noisy_sgd, ...
      learning_rate: base learning rate (the peak when a schedule is given).
      schedule: a multiplier schedule: a ``make_schedule`` spec, a schedule name
        with no arguments (``"constant"``), or a callable ``step -> factor``.
      clip_global_norm: if set, gradients are rescaled to at most this global L2 norm
        before anything else (PyTorch ``clip_grad_norm_``).
      weight_decay: decoupled decay for optimizers that take ``weight_decay``
        (adamw, lamb, lars, lion, ...); for the others, coupled L2 added to the
        gradient before the optimizer (PyTorch's ``SGD``/``Adam(weight_decay=)``).
      accumulate_steps: k >= 1; with k > 1 gradients are averaged over k calls of
        ``update`` and applied on every k-th (``optax.MultiSteps``), zero updates otherwise.
      inject: the float hyperparameters to keep as state arrays (the learning
        rate always is); None injects every one. Static values cost nothing per
        step, which matters when a population vmaps over the optimizer: there
        inject only what the members vary.
      **hyper: the alias's own arguments (``momentum``, ``b1``, ``nesterov``, ...).

    Returns:
      An ``optax.GradientTransformation``.

    Raises:
      ValueError: unknown optimizer, unknown hyperparameter for it, or bad
        ``accumulate_steps``.
    """
    if name not in OPTIMIZERS:
        raise ValueError(unknown_name_message("optimizer", name, OPTIMIZERS))
    alias = OPTIMIZERS[name]
    _check_arguments(f"optimizer {name!r}", hyper, alias, exclude=("learning_rate",))
    if not (isinstance(accumulate_steps, int) and accumulate_steps >= 1):
        raise ValueError(f"accumulate_steps must be an int >= 1, got {accumulate_steps!r}")
    defaults = {
        key: parameter.default
        for key, parameter in inspect.signature(alias).parameters.items()
        if _is_injected(parameter.default)
    }
    arguments = {**defaults, **hyper, "learning_rate": _as_float(learning_rate)}
    if schedule is not None:
        arguments[MULTIPLIER] = _multiplier(schedule)
    if clip_global_norm is not None:
        arguments["clip_global_norm"] = _as_float(clip_global_norm)
    if weight_decay is not None:
        arguments["weight_decay"] = _as_float(weight_decay)
    own_weight_decay = "weight_decay" in inspect.signature(alias).parameters
    injected = lambda key, value: key in (MULTIPLIER, "learning_rate") or (  # noqa: E731
        _is_injected(value) and (inject is None or key in inject))
    static = [key for key, value in arguments.items() if not injected(key, value)]
    factory = _chain_factory(alias, list(arguments), own_weight_decay)
    optimizer = optax.inject_hyperparams(factory, static_args=static, hyperparam_dtype=jnp.float32)(
        **arguments
    )
    if accumulate_steps == 1:
        return optimizer
    return optax.MultiSteps(optimizer, every_k_schedule=accumulate_steps).gradient_transformation()


def _as_float(value: float | jax.Array) -> float | jax.Array:
    """Python numbers become floats (so they are injected); arrays, even traced, pass."""
    return float(value) if isinstance(value, (int, float)) else value


def _multiplier(schedule: Mapping[str, Any] | str | Schedule) -> Schedule | float:
    """The learning-rate multiplier for ``make_optimizer(schedule=...)``."""
    if callable(schedule):
        return schedule
    if isinstance(schedule, str):
        schedule = {"name": schedule}
    return make_schedule(schedule)


def _injected_states(opt_state: Any) -> list[optax.InjectStatefulHyperparamsState]:
    """Every injected-hyperparameter state inside a (chained / MultiSteps) state."""
    is_injected = lambda node: isinstance(node, optax.InjectStatefulHyperparamsState)
    states = [node for node in jax.tree.leaves(opt_state, is_leaf=is_injected) if is_injected(node)]
    if not states:
        raise ValueError(
            "no injected hyperparameters in this optimizer state — build the optimizer "
            "with fdl.optim.make_optimizer (optax.inject_hyperparams)"
        )
    return states


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate applied at the most recent update (before any: the first one's).

    Args:
      opt_state: a state from ``make_optimizer(...).init`` or ``.update``.

    Returns:
      () float32 (batched under vmap): ``learning_rate * learning_rate_multiplier``.

    Raises:
      ValueError: the state holds no injected hyperparameters.
    """
    hyperparams = _injected_states(opt_state)[0].hyperparams
    return hyperparams["learning_rate"] * hyperparams.get(MULTIPLIER, 1.0)


def get_hyperparameter(opt_state: Any, name: str) -> jax.Array:
    """The injected hyperparameter ``name`` (for ``learning_rate``: the base, before any schedule).

    Raises:
      ValueError: no injected state, or ``name`` is not injected (lists those that are).
    """
    available = _injected_states(opt_state)[0].hyperparams
    if name not in available or name == MULTIPLIER:
        settable = [key for key in available if key != MULTIPLIER]
        raise ValueError(unknown_name_message("injected hyperparameter", name, settable))
    return available[name]


def set_hyperparameter(opt_state: Any, name: str, value: float | jax.Array) -> Any:
    """Returns ``opt_state`` with injected hyperparameter ``name`` set to ``value`` (pure).

    The value keeps the stored dtype and shape, so a jitted step does not retrace.
    With a schedule, ``learning_rate`` is the base the schedule multiplies.

    Raises:
      ValueError: no injected state, or ``name`` is not injected (lists those that are).
    """
    is_injected = lambda node: isinstance(node, optax.InjectStatefulHyperparamsState)
    get_hyperparameter(opt_state, name)  # raises for an unknown name

    def replace(node):
        if not is_injected(node):
            return node
        old = node.hyperparams[name]
        new = jnp.broadcast_to(jnp.asarray(value, old.dtype), old.shape)
        return node._replace(hyperparams={**node.hyperparams, name: new})

    return jax.tree.map(replace, opt_state, is_leaf=is_injected)
