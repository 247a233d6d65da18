"""Attributions: how much each input feature moves a model's output, by gradients.

    >>> from fdl.attribution import Explainer
    >>> explainer = Explainer(model)                # compiles on first use, once per method and batch shape
    >>> result = explainer.explain(state.params, state.model_state, x[:4], method="integrated_gradients")
    >>> result.attributions.shape                   # (n, *input_shape), in x's own units
    (4, 40)
    >>> result.targets.tolist() == np.argmax(fdl.predict(model, state, x[:4]), -1).tolist()  # predicted class
    True
    >>> logits = fdl.predict(model, state, np.concatenate([x[:4], np.zeros((4, 40), np.float32)]))
    >>> change = logits[np.arange(4), result.targets] - logits[4 + np.arange(4), result.targets]
    >>> float(np.abs(result.attributions.sum(axis=1) - change).max()) < 1e-2   # completeness: f(x) - f(0)
    True

Three methods, each a pure function of a batched `forward(x) -> outputs` (any JAX
function, not only an fdl model) that `Explainer` compiles once per (method,
batch shape) and reuses:

- `saliency`: the gradient of the target output with respect to the input,
  d f_t(x) / dx (Simonyan et al. 2014, "Deep inside convolutional networks").
- `integrated_gradients`: (x - x') * the mean gradient along the straight path
  from a baseline x' to x (Sundararajan et al. 2017, "Axiomatic attribution for
  deep networks"). The attributions of an input sum to f_t(x) - f_t(x')
  ("completeness") up to the error of the quadrature: the midpoint rule over
  `steps` points, whose error falls like 1/steps² for a smooth model and like
  1/steps for a ReLU network (its gradient jumps along the path).
- `smoothgrad`: the mean gradient at `samples` noisy copies of x, noise
  N(0, sigma²) with sigma = noise * (max(x) - min(x)) per input (Smilkov et al.
  2017, "SmoothGrad: removing noise by adding noise").

Every gradient is `jax.grad` of the summed target outputs of a batch: in
inference mode (dropout off, BatchNorm on its running statistics) examples do
not interact, so the gradient of the sum with respect to example i is example
i's own gradient — one backward pass for the whole batch. Integrated gradients
scan over the path (memory of one batch's gradient, not `steps` of them);
smoothgrad vmaps over its samples, drawing example i's noise from
`fold_in(key, i)` with i its index in the whole input array, so the answer for
an input does not depend on the batch it is cut into.

A module of the library's surface, beside fdl.losses and fdl.metrics rather
than in fdl.runs, because nothing here needs a run directory: any Layer and its
state (or any JAX function) is explained. The maths needs only jax and fdl.nn;
`Explainer` cuts big inputs into the batches of
`fdl.train.evaluate.padded_batches`, as evaluation does. A run
directory's model (its fitted preprocessing folded in, so attributions are
with respect to the raw inputs) is explained by `fdl.explain` (fdl.runs.explain).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from fdl.errors import unknown_name_message
from fdl.nn.core import Layer, batched
from fdl.nn.summary import output_shape
from fdl.train.evaluate import DEFAULT_EVAL_BATCH_SIZE, padded_batches

__all__ = ["METHODS", "DEFAULTS", "Explanation", "target_scores", "saliency", "integrated_gradients",
           "smoothgrad", "Explainer"]

METHODS = ("saliency", "integrated_gradients", "smoothgrad")
# Each method's options and their defaults. Integrated gradients' completeness error (relative
# to f(x) - f(0)) over 100 MNIST-1D test inputs, median (90th percentile), of a 2-epoch MLP: 0.2 %
# (0.5 %) at 64 steps, 0.05 % (0.1 %) at 256; of the ReLU CNN 1.3 % (3.4 %) and 0.3 % (1.1 %).
# Smoothgrad's 50 samples at 15 % noise are the paper's choice (10-20 %).
DEFAULTS = {"saliency": {}, "integrated_gradients": {"baseline": 0.0, "steps": 64},
            "smoothgrad": {"samples": 50, "noise": 0.15, "seed": 0}}

Forward = Callable[[jax.Array], jax.Array]  # (n, *input_shape) -> (n,) or (n, classes)


class Explanation(NamedTuple):
    """Attributions of a batch and what they explain.

    Attributes:
      attributions: (n, *input_shape) float32, in the units of the target output
        per unit of input (saliency, smoothgrad) or of the target output
        (integrated gradients: they sum to f_t(x) - f_t(baseline)).
      targets: (n,) int32, the output index explained per input (-1 for a model
        with one output per example).
      outputs: (n, classes) or (n,) float32, the model's outputs at x.
    """

    attributions: jax.Array
    targets: jax.Array
    outputs: jax.Array


def target_scores(outputs: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(the explained output per example (n,), the targets used (n,) int32).

    Args:
      outputs: (n, classes) logits, or (n,) for a model with one output.
      targets: (n,) int32 class indices; -1 picks the predicted class (argmax).
        Ignored (and returned) for outputs (n,).
    """
    if outputs.ndim == 1:
        return outputs, targets
    chosen = jnp.where(targets < 0, jnp.argmax(outputs, axis=-1), targets).astype(jnp.int32)
    return jnp.take_along_axis(outputs, chosen[:, None], axis=1)[:, 0], chosen


def _gradient(forward: Forward, x: jax.Array, targets: jax.Array):
    """(d target output / d x per example (n, *input_shape), (outputs, targets used))."""
    def total(x):
        outputs = forward(x)
        scores, chosen = target_scores(outputs, targets)
        return jnp.sum(scores), (outputs, chosen)

    return jax.grad(total, has_aux=True)(x)


def saliency(forward: Forward, x: jax.Array, targets: jax.Array) -> Explanation:
    """The gradient of each input's target output with respect to the input.

    Args:
      forward: the batched model in inference mode, (n, *input_shape) -> (n, classes) or (n,).
      x: (n, *input_shape) float inputs.
      targets: (n,) int32 output indices; -1 for the predicted class.
    """
    gradient, (outputs, chosen) = _gradient(forward, x, targets)
    return Explanation(gradient, chosen, outputs)


def integrated_gradients(forward: Forward, x: jax.Array, targets: jax.Array, baseline: jax.Array, *,
                         steps: int) -> Explanation:
    """(x - baseline) * the mean gradient at the midpoints of `steps` equal pieces of the path.

    The default target (-1) is the class predicted at x, kept along the path.

    Args:
      forward, x, targets: as in `saliency`.
      baseline: (n, *input_shape) the inputs the path starts from (x' in the paper).
      steps: gradient evaluations along the path (a `lax.scan`).
    """
    outputs = forward(x)
    _, chosen = target_scores(outputs, targets)

    def add_gradient(total, alpha):
        gradient, _ = _gradient(forward, baseline + alpha * (x - baseline), chosen)
        return total + gradient, None

    alphas = (jnp.arange(steps, dtype=x.dtype) + 0.5) / steps
    total, _ = jax.lax.scan(add_gradient, jnp.zeros_like(x), alphas)
    return Explanation((x - baseline) * total / steps, chosen, outputs)


def smoothgrad(forward: Forward, x: jax.Array, targets: jax.Array, key: jax.Array, indices: jax.Array, *,
               samples: int, noise) -> Explanation:
    """The mean gradient at `samples` copies of each input with Gaussian noise added.

    Input i's noise is `sigma_i * jax.random.normal(fold_in(key, indices[i]), (samples,
    *input_shape))[s]` for sample s, with sigma_i = noise * (max(x_i) - min(x_i)).

    Args:
      forward, x, targets: as in `saliency`; the default target is the class predicted at x.
      key: a PRNG key; the same key gives the same attributions.
      indices: (n,) int32 each input's index in the whole input array.
      samples: noisy copies per input (a `jax.vmap`).
      noise: () noise level, a fraction of each input's range of values.
    """
    outputs = forward(x)
    _, chosen = target_scores(outputs, targets)
    feature_axes = tuple(range(1, x.ndim))
    sigma = noise * (jnp.max(x, feature_axes) - jnp.min(x, feature_axes))
    draws = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (samples, *x.shape[1:]),
                                                 x.dtype))(indices)
    scaled = draws * sigma.reshape((-1, 1) + (1,) * len(feature_axes))  # (n, samples, *input_shape)
    gradients = jax.vmap(lambda delta: _gradient(forward, x + delta, chosen)[0], in_axes=1)(scaled)
    return Explanation(jnp.mean(gradients, axis=0), chosen, outputs)


class Explainer:
    """The compiled attribution programs of one model: one per (method, batch shape, steps/samples).

    Keep one for repeated calls (a run keeps its own: `fdl.explain`); inputs of
    any count are cut into batches of `batch_size` rows (fewer inputs: one batch
    of all of them), so a new count above `batch_size` compiles nothing.

    Args:
      model: the Layer, applied in inference mode (train=False).
      preprocess: a JAX function of raw inputs (n, *input_shape) applied before the
        model inside the differentiated function, so attributions are with respect
        to the raw inputs; None for none.
      batch_size: rows per compiled call.
    """

    def __init__(self, model: Layer, *, preprocess: Callable | None = None,
                 batch_size: int = DEFAULT_EVAL_BATCH_SIZE):
        self.model, self.batch_size = model, batch_size
        self.preprocess = preprocess or (lambda x: x)
        self._apply = batched(model)
        self._programs = {
            "saliency": jax.jit(lambda p, s, x, t: saliency(self._forward(p, s), x, t)),
            "integrated_gradients": jax.jit(
                lambda p, s, x, t, baseline, steps: integrated_gradients(self._forward(p, s), x, t, baseline,
                                                                         steps=steps), static_argnames="steps"),
            "smoothgrad": jax.jit(
                lambda p, s, x, t, key, indices, noise, samples: smoothgrad(self._forward(p, s), x, t, key, indices,
                                                                            samples=samples, noise=noise),
                static_argnames="samples"),
        }

    def _forward(self, params, model_state) -> Forward:
        def forward(x):
            return self._apply(params, model_state, self.preprocess(x), train=False)[0]
        return forward

    def explain(self, params, model_state, x, *, method: str = "saliency", target=None, **options) -> Explanation:
        """Attributions of every row of x, as numpy arrays.

        Args:
          params, model_state: the model's (a TrainState's `.params`, `.model_state`).
          x: (n, *input_shape) raw inputs, n >= 1 (the caller checks the shape
            against the model: `run.check_inputs`, `fdl.train.checks.check_data`).
          method: one of `METHODS`.
          target: None (the predicted class of each input), a class index, or (n,)
            class indices; None for a model with one output per example.
          **options: the method's, defaults in `DEFAULTS`: integrated_gradients
            `baseline` (a number, one input (*input_shape) or (n, *input_shape),
            raw units) and `steps` (int >= 1); smoothgrad `samples` (int >= 1),
            `noise` (a fraction of each input's range, >= 0) and `seed` (int).

        Returns:
          The Explanation (numpy arrays).

        Raises:
          ValueError: an unknown method or option, an option of another method,
            a target out of range or of the wrong shape, a baseline of the wrong
            shape, a model whose output is neither a number nor (classes,) per
            example; the message names the argument.
        """
        x = np.asarray(x, np.float32)
        options = _method_options(method, options)
        targets = _targets(target, len(x), output_shape(self.model, x.shape[1:]))
        if method == "integrated_gradients":
            options["baseline"] = _baseline(options["baseline"], x)
        if method == "smoothgrad":
            options["key"] = jax.random.key(options.pop("seed"))
        chunks = []
        for batch, rows, mask in padded_batches(x, np.arange(len(x)), min(len(x), self.batch_size)):
            arguments = {name: value[rows] if name == "baseline" else value for name, value in options.items()}
            if method == "smoothgrad":
                arguments["indices"] = rows.astype(np.int32)
            result = self._programs[method](params, model_state, batch, targets[rows], **arguments)
            chunks.append([np.asarray(part)[mask] for part in result])
        return Explanation(*(np.concatenate(parts) for parts in zip(*chunks)))


def _method_options(method: str, options: dict) -> dict:
    """`method`'s options: the given ones checked, the defaults (`DEFAULTS`) for the rest.

    Raises:
      ValueError: an unknown method, an option the method does not take (None counts as
        not given), or a bad value; the message names it.
    """
    if method not in METHODS:
        raise ValueError(f"method: {unknown_name_message('attribution method', method, METHODS)}")
    defaults = DEFAULTS[method]
    for name, value in options.items():
        if value is not None and name not in defaults:
            users = [other for other in METHODS if name in DEFAULTS[other]]
            takes = f"{name} is an option of {', '.join(users)}" if users else f"unknown option {name!r}"
            raise ValueError(f"{name}: method {method} takes {', '.join(defaults) or 'no options'} — {takes}")
    chosen = {name: default if options.get(name) is None else options[name] for name, default in defaults.items()}
    for name in ("steps", "samples"):
        if name in chosen and (isinstance(chosen[name], bool) or not isinstance(chosen[name], (int, np.integer))
                               or chosen[name] < 1):
            raise ValueError(f"{name}: expected a whole number >= 1, got {chosen[name]!r}")
    if "noise" in chosen and not (isinstance(chosen["noise"], (int, float, np.number))
                                  and math.isfinite(chosen["noise"]) and chosen["noise"] >= 0):
        raise ValueError(f"noise: expected a number >= 0 (a fraction of each input's range), got {chosen['noise']!r}")
    if "seed" in chosen and (isinstance(chosen["seed"], bool) or not isinstance(chosen["seed"], (int, np.integer))):
        raise ValueError(f"seed: expected an int, got {chosen['seed']!r}")
    return chosen


def _targets(target, n: int, out_shape) -> np.ndarray:
    """(n,) int32 output indices to explain, -1 for the predicted class; `target` checked against the model."""
    if out_shape == ():
        if target is not None:
            raise ValueError(f"target: the model gives one number per example (output shape ()), there is no "
                             f"class to choose — leave target unset, got {target!r}")
        return np.full(n, -1, np.int32)
    if len(out_shape) != 1 or not all(isinstance(d, int) for d in out_shape):
        raise ValueError(f"model: per-example output of shape {out_shape}; attributions need one number or "
                         "(classes,) outputs per example — explain a model that ends in Dense(classes)")
    if target is None:
        return np.full(n, -1, np.int32)
    classes, targets = out_shape[0], np.asarray(target)
    if targets.dtype.kind not in "iu":
        raise ValueError(f"target: expected class indices (ints), got {targets.dtype} {target!r}")
    if targets.shape not in ((), (n,)):
        raise ValueError(f"target: shape {targets.shape}, expected one class index or ({n},), one per input")
    targets = np.broadcast_to(targets, (n,))
    outside = np.flatnonzero((targets < 0) | (targets >= classes))
    if outside.size:
        row = outside[0]
        raise ValueError(f"target: class {targets[row]} (input {row}) is out of range for the model's {classes} "
                         f"outputs — give 0..{classes - 1}, or leave target unset for the predicted class")
    return targets.astype(np.int32)


def _baseline(baseline, x: np.ndarray) -> np.ndarray:
    """The baseline of every input, (n, *input_shape) float32, from a number, one input or one per input."""
    try:
        values = np.asarray(baseline, np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"baseline: expected a number or an array, got {baseline!r}") from None
    if values.shape not in ((), x.shape[1:], x.shape):
        raise ValueError(f"baseline: shape {values.shape}, expected a number, one input {x.shape[1:]} or one "
                         f"per input {x.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError("baseline: holds NaN or infinite values — give finite numbers")
    return np.broadcast_to(values, x.shape)
