"""Per-example losses: ``loss(output, target) -> scalar`` for ONE example.

The engine adds the batch axis with ``jax.vmap`` and takes the mean over the
real (unpadded) examples, so every loss here sees a single example and returns
a scalar. Wherever optax has the function it is used, so the numerics (log-sum-exp
forms, stable sigmoids) are optax's.

Conventions (chosen on purpose; they are where PyTorch and Keras users trip):

* Classifiers output **logits**, never probabilities (``cross_entropy``,
  ``binary_cross_entropy``, the Bernoulli ``elbo_loss``). This matches PyTorch's
  ``CrossEntropyLoss`` / ``BCEWithLogitsLoss`` and Keras with
  ``from_logits=True``.
* ``mse`` is the plain mean of squared errors over the example's elements
  (PyTorch ``MSELoss``), NOT half-MSE (optax ``l2_loss``).
* ``huber`` follows optax, PyTorch ``HuberLoss`` and Keras ``Huber``.
* Multi-element outputs are averaged over the example's elements, so the batch
  mean equals PyTorch's ``reduction="mean"``. The VAE terms are the exception:
  they are *summed* over data and latent dimensions, as a log-likelihood is.
"""
import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from fdl.errors import unknown_name_message

Loss = Callable[[jax.Array, jax.Array], jax.Array]


def _target_like(output: jax.Array, target: jax.Array, loss_name: str) -> jax.Array:
    """Reshapes ``target`` to ``output``'s shape when they hold the same number of values.

    Lets a regression model output ``(1,)`` against a scalar target (and vice versa)
    without silent broadcasting of mismatched shapes.
    """
    output, target = jnp.asarray(output), jnp.asarray(target)
    if output.size != target.size:
        raise ValueError(
            f"{loss_name}: expected a target with {output.size} value(s) like the output "
            f"{output.shape}, got target shape {target.shape} — check the model's output "
            "size against the dataset's targets"
        )
    return jnp.reshape(target, output.shape).astype(output.dtype)


def cross_entropy(
    logits: jax.Array, label: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Softmax cross-entropy of one example, in nats.

    Args:
      logits: (num_classes,) float, unnormalised log-probabilities (not softmax output).
      label: either a scalar int class index in ``[0, num_classes)``, or a
        (num_classes,) float one-hot / probability vector.
      label_smoothing: alpha in ``[0, 1)``; the target becomes
        ``(1 - alpha) * one_hot + alpha / num_classes`` (PyTorch's and Keras'
        definition, via ``optax.smooth_labels``).

    Returns:
      () float, ``-sum(target * log_softmax(logits))``; stable for logits of 1e4.

    Raises:
      ValueError: the label is neither a scalar int nor a vector shaped like logits.
    """
    logits, label = jnp.asarray(logits), jnp.asarray(label)
    num_classes = logits.shape[-1]
    if label.ndim == logits.ndim - 1:
        if not jnp.issubdtype(label.dtype, jnp.integer):
            raise ValueError(
                f"cross_entropy: a class-index label must be an int, got dtype {label.dtype} "
                "— cast the labels with .astype('int32'), or pass one-hot vectors"
            )
        if label_smoothing == 0.0:
            return optax.softmax_cross_entropy_with_integer_labels(logits, label)
        label = jax.nn.one_hot(label, num_classes, dtype=logits.dtype)
    elif label.shape != logits.shape:
        raise ValueError(
            f"cross_entropy: expected a scalar int label or a one-hot vector of shape "
            f"{logits.shape}, got label shape {label.shape}"
        )
    if label_smoothing:
        label = optax.smooth_labels(label, label_smoothing)
    return optax.softmax_cross_entropy(logits, label)


def cross_entropy_with(*, label_smoothing: float) -> Loss:
    """Returns ``cross_entropy`` with label smoothing bound, for ``fit(loss=...)``.

    Example:
      >>> loss = cross_entropy_with(label_smoothing=0.1)
      >>> float(loss(jnp.zeros(4), 2))  # uniform logits: log(4) whatever the smoothing
      1.386...
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    return functools.partial(cross_entropy, label_smoothing=label_smoothing)


def binary_cross_entropy(logit: jax.Array, label: jax.Array) -> jax.Array:
    """Sigmoid binary cross-entropy of one example, in nats (``BCEWithLogitsLoss``).

    Args:
      logit: () or (num_labels,) float, the model's LOGIT(s), not probabilities;
        ``sigmoid(logit)`` is the probability of the positive class.
      label: same number of values as ``logit``, 0/1 (or soft targets in [0, 1]).

    Returns:
      () float, mean over the example's labels (one value for a binary classifier).
    """
    logit = jnp.asarray(logit)
    label = _target_like(logit, label, "binary_cross_entropy")
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logit, label))


def mse(output: jax.Array, target: jax.Array) -> jax.Array:
    """Mean squared error over the example's elements (PyTorch ``MSELoss``, NOT half-MSE).

    Args:
      output: (...) float prediction.
      target: the same number of values as ``output``.

    Returns:
      () float, ``mean((output - target) ** 2)`` in squared target units.
    """
    target = _target_like(output, target, "mse")
    return jnp.mean(optax.squared_error(output, target))


def mae(output: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute error over the example's elements (PyTorch ``L1Loss``).

    Args:
      output: (...) float prediction.
      target: the same number of values as ``output``.

    Returns:
      () float, ``mean(|output - target|)`` in target units.
    """
    target = _target_like(output, target, "mae")
    return jnp.mean(jnp.abs(output - target))


def huber(output: jax.Array, target: jax.Array, *, delta: float = 1.0) -> jax.Array:
    """Huber loss, mean over the example's elements (``optax.huber_loss``).

    Per element, with ``e = output - target``::

        0.5 * e**2                    if |e| <= delta
        delta * (|e| - 0.5 * delta)   otherwise

    This equals PyTorch ``HuberLoss(delta)`` and Keras ``Huber(delta)``. PyTorch's
    ``SmoothL1Loss(beta)`` divides by beta: ``SmoothL1(beta=d) = Huber(delta=d) / d``,
    so the two agree only at ``delta = beta = 1``.

    Args:
      output: (...) float prediction.
      target: the same number of values as ``output``.
      delta: > 0, where the loss turns from quadratic to linear (target units).

    Returns:
      () float.
    """
    target = _target_like(output, target, "huber")
    return jnp.mean(optax.huber_loss(output, target, delta=delta))


def gaussian_kl(mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """KL(N(mean, exp(log_var)) || N(0, I)) in nats, summed over latent dimensions.

    Closed form: ``0.5 * sum(exp(log_var) + mean**2 - 1 - log_var)``.

    Args:
      mean: (latent,) float posterior mean.
      log_var: (latent,) float posterior log-variance (natural log).

    Returns:
      () float, >= 0.
    """
    return 0.5 * jnp.sum(jnp.exp(log_var) + jnp.square(mean) - 1.0 - log_var)


def reparameterize(key: jax.Array, mean: jax.Array, log_var: jax.Array) -> jax.Array:
    """Samples ``z ~ N(mean, exp(log_var))`` differentiably: ``mean + exp(log_var / 2) * eps``.

    Args:
      key: PRNG key; split it per example (the engine's vmap does).
      mean: (latent,) float.
      log_var: (latent,) float.

    Returns:
      (latent,) float sample.
    """
    noise = jax.random.normal(key, jnp.shape(mean), jnp.result_type(mean))
    return mean + jnp.exp(0.5 * log_var) * noise


def elbo_loss(
    reconstruction: jax.Array,
    x: jax.Array,
    mean: jax.Array,
    log_var: jax.Array,
    *,
    likelihood: str = "bernoulli",
) -> jax.Array:
    """Negative ELBO of one example, in nats: ``-log p(x | z) + KL(q(z | x) || N(0, I))``.

    The reconstruction term is a one-sample estimate at the decoded ``z`` and is
    SUMMED over the data dimensions (a log-likelihood, unlike ``mse``'s mean).

    Args:
      reconstruction: decoder output shaped like ``x``. For ``"bernoulli"`` these
        are LOGITS of p(x_i = 1) (x in [0, 1]); for ``"gaussian"`` the mean of a
        unit-variance Gaussian.
      x: (...) float data example.
      mean: (latent,) float encoder mean.
      log_var: (latent,) float encoder log-variance.
      likelihood: ``"bernoulli"`` or ``"gaussian"``. The Gaussian NLL keeps its
        constant ``0.5 * log(2 pi)`` per dimension, so the value is a true -ELBO.

    Returns:
      () float.

    Raises:
      ValueError: unknown likelihood.
    """
    x = _target_like(reconstruction, x, "elbo_loss")
    if likelihood == "bernoulli":
        nll = jnp.sum(optax.sigmoid_binary_cross_entropy(reconstruction, x))
    elif likelihood == "gaussian":
        nll = jnp.sum(0.5 * jnp.square(x - reconstruction) + 0.5 * math.log(2 * math.pi))
    else:
        raise ValueError(
            f"elbo_loss: unknown likelihood {likelihood!r} — valid: 'bernoulli', 'gaussian'"
        )
    return nll + gaussian_kl(mean, log_var)


def elbo_with(*, likelihood: str) -> Loss:
    """Adapts ``elbo_loss`` to the engine's ``loss(output, target)`` form.

    The VAE model's per-example output must be the tuple
    ``(reconstruction, mean, log_var)``; the target is ``x``.
    """
    if likelihood not in ("bernoulli", "gaussian"):
        raise ValueError(
            f"elbo_with: unknown likelihood {likelihood!r} — valid: 'bernoulli', 'gaussian'"
        )

    def loss(output, x):
        reconstruction, mean, log_var = output
        return elbo_loss(reconstruction, x, mean, log_var, likelihood=likelihood)

    return loss


LOSSES: dict[str, Loss] = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "elbo_bernoulli": elbo_with(likelihood="bernoulli"),
    "elbo_gaussian": elbo_with(likelihood="gaussian"),
}


def get_loss(name_or_callable: str | Loss) -> Loss:
    """Looks a loss up by name; a callable ``loss(output, target)`` passes through.

    Raises:
      ValueError: unknown name, with a did-you-mean suggestion and the valid names.
    """
    if callable(name_or_callable):
        return name_or_callable
    if name_or_callable in LOSSES:
        return LOSSES[name_or_callable]
    raise ValueError(unknown_name_message("loss", name_or_callable, LOSSES))
