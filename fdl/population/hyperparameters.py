"""A population member's optimizer hyperparameters: which a population injects, and setting them.

Each member's hyperparameters (learning rate, weight decay, ...) are arrays in
its own optimizer state (`optax.inject_hyperparams`, `fdl.optim`), so one
compiled step serves every value. A name is set in every injected state a
member holds; with several models (a GAN's `{"generator": ..., "discriminator":
...}` from `fdl.init_train_state`) "<model>/<name>" sets that model's only.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import optax

from fdl.optim import set_hyperparameter
from fdl.train.state import TrainState

__all__ = ["base_optimizer", "varied_hyperparameters", "check_settable", "set_member_hyperparameter",
           "with_hyperparameters", "is_injected", "several_models"]


def base_optimizer(members: Sequence, optimizer: dict) -> dict:
    """The shared optimizer arguments, with every member-set hyperparameter injected.

    A hyperparameter every member sets gets the placeholder 1.0 in the shared
    optimizer (each member overwrites it), so populations that differ only in
    values share one compiled program. One that only some members set must
    have a value in `optimizer` for the others. Hyperparameters no member sets
    are compiled in as constants.
    """
    base = dict(optimizer)
    names = sorted({n for m in members for n in m.hyperparams})
    for name in names:
        if all(name in m.hyperparams for m in members):
            base[name] = 1.0
        elif base.get(name) is None:
            raise ValueError(f"train_population: only some members set {name!r} — give every member "
                             f"a value or set optimizer[{name!r}] for the others")
    # Only what members vary is an array in the state: under vmap every injected
    # value is per member and costs a broadcast in every update.
    base["inject"] = names
    return base


def with_hyperparameters(states, changes: dict):
    """Stacked states with the named injected hyperparameters set per member: changes[name]: (P,)."""
    opt_state = states.opt_state
    for name, values in changes.items():
        opt_state = set_hyperparameter(opt_state, name, jnp.asarray(values))
    return states.replace(opt_state=opt_state)


def is_injected(node) -> bool:
    return isinstance(node, optax.InjectStatefulHyperparamsState)


def varied_hyperparameters(members: Sequence, fallback: dict) -> tuple[str, ...]:
    """The names members set on a shared transformation; one only some set needs `fallback[name]`."""
    names = sorted({n for m in members for n in m.hyperparams})
    for name in names:
        if not all(name in m.hyperparams for m in members) and fallback.get(name) is None:
            raise ValueError(f"train_population: only some members set {name!r} — give every member a value"
                             + (f" or set optimizer[{name!r}] for the others" if fallback else ""))
    return tuple(names)


def several_models(state: TrainState) -> bool:
    """Whether `state` holds several named models, each with its optimizer (`fdl.init_train_state`'s dicts)."""
    return isinstance(state.opt_state, dict) and isinstance(state.params, dict) and \
        set(state.opt_state) == set(state.params)


def set_member_hyperparameter(state: TrainState, name: str, value) -> TrainState:
    """`state` with a member hyperparameter set: "learning_rate" in every optimizer state it holds,
    "generator/learning_rate" in the "generator" model's only (a state of several models)."""
    model_name, _, hyperparameter = name.rpartition("/")
    if not model_name:
        return state.replace(opt_state=set_hyperparameter(state.opt_state, name, value))
    opt_state = dict(state.opt_state)
    opt_state[model_name] = set_hyperparameter(opt_state[model_name], hyperparameter, value)
    return state.replace(opt_state=opt_state)


def check_settable(state: TrainState, names: Sequence[str], members: Sequence, fix: str) -> None:
    """One-line error for a member hyperparameter that not every optimizer state in `state` injects.

    `state` may hold shapes (`jax.eval_shape`). A name is set in every injected
    state (`set_member_hyperparameter`); with several models (`opt_state` a
    dict by model name, as `fdl.init_train_state` makes it) each model's
    optimizer must inject it, so none silently keeps its own value, and
    "<model>/<name>" sets it in that model's optimizer only (a GAN's two rates).
    """
    several = several_models(state)
    for name in names:
        index = next(i for i, m in enumerate(members) if name in m.hyperparams)
        model_name, _, hyperparameter = name.rpartition("/")
        if model_name and (not several or model_name not in state.opt_state):
            models = f"its models are {sorted(state.opt_state)}" if several else "it holds one model"
            raise ValueError(f"members[{index}].hyperparams[{name!r}]: the member's state has no model "
                             f"{model_name!r} ({models}) — name one of them, or drop the prefix")
        if model_name:
            parts = [(model_name, state.opt_state[model_name])]
        else:
            parts = state.opt_state.items() if several else [(None, state.opt_state)]
        for part_name, opt_state in parts:
            injected = [node for node in jax.tree.leaves(opt_state, is_leaf=is_injected) if is_injected(node)]
            if not injected or any(hyperparameter not in node.hyperparams for node in injected):
                where = "the optimizer" if part_name is None else f"the {part_name!r} optimizer"
                raise ValueError(f"members[{index}].hyperparams[{name!r}]: {where} of the member's state does not "
                                 f"inject {hyperparameter!r} — {fix.format(name=hyperparameter)}, or drop it from "
                                 "the members")
