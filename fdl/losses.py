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
  they are *summed* over data and latent dimensions, as a log-likelihood is,
  and so is ``kl_divergence`` (a sum over classes is what makes it a KL): the
  batch mean of its values is PyTorch's ``kl_div(..., reduction="batchmean")``.
* ``kl_divergence`` takes LOG-probabilities and target probabilities, as
  PyTorch's ``kl_div(input, target)`` (Keras' ``KLDivergence`` takes
  probabilities for both); ``from_logits=True`` takes logits instead.
* Losses over several embeddings of one example read them stacked on the
  output's first axis: ``cosine_embedding`` a pair ``(2, dim)`` with target
  1 or -1, ``triplet_margin`` ``(3, dim)`` = (anchor, positive, negative) with
  the target ignored. A shared encoder on a ``(2, features)`` or ``(3,
  features)`` example gives that layout (``Dense`` maps the last axis).

By name, with arguments: ``get_loss("huber", delta=2.0)`` returns a ``NamedLoss``,
a frozen dataclass that calls ``huber(output, target, delta=2.0)``. Two losses
with the same name and arguments are equal and hash equal, so programs compiled
for one are reused for the other. The arguments are the keyword-only parameters
of the registered function and are checked when the loss is built. A name in
``PRESETS`` fixes some of them: ``elbo_bernoulli`` is ``elbo`` with
``likelihood="bernoulli"``; ``LOSSES`` holds every name, presets as their
``NamedLoss``.
"""
import dataclasses
import inspect
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from fdl.errors import did_you_mean, unknown_name_message

__all__ = ["Loss", "LOSSES", "PRESETS", "NamedLoss", "get_loss", "loss_arguments", "check_argument",
           "cross_entropy", "cross_entropy_with", "binary_cross_entropy", "mse", "mae", "huber",
           "elbo", "elbo_loss", "gaussian_kl", "reparameterize", "kl_divergence",
           "cosine_embedding", "triplet_margin"]

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


def elbo(output: tuple[jax.Array, jax.Array, jax.Array], x: jax.Array, *,
         likelihood: str = "bernoulli") -> jax.Array:
    """``elbo_loss`` in the engine's ``loss(output, target)`` form, for a VAE.

    Args:
      output: the VAE's per-example output, the tuple ``(reconstruction, mean,
        log_var)`` of ``elbo_loss``'s first, third and fourth arguments.
      x: (...) float data example, the target.
      likelihood: ``"bernoulli"`` or ``"gaussian"``, as in ``elbo_loss``.

    Returns:
      () float, the negative ELBO in nats.
    """
    reconstruction, mean, log_var = output
    return elbo_loss(reconstruction, x, mean, log_var, likelihood=likelihood)


def kl_divergence(log_probs: jax.Array, target: jax.Array, *, from_logits: bool = False) -> jax.Array:
    """KL(target || prediction) of one example in nats, from LOG-probabilities (``optax.kl_divergence``).

    ``sum(target * (log(target) - log_probs))`` over all of the example's elements,
    with ``0 * log(0) = 0``: PyTorch's ``kl_div(input=log_probs, target=probs)``
    (``log_target=False``). The engine's mean over the batch of these per-example
    sums is ``reduction="batchmean"``, the true KL; PyTorch's default
    ``reduction="mean"`` also divides by the number of classes. Keras'
    ``KLDivergence(y_true, y_pred)`` takes probabilities: pass ``log(y_pred)``.

    Args:
      log_probs: (num_classes,) or (..., num_classes) float, the model's
        log-probabilities (end it with ``LogSoftmax()``), or logits with
        ``from_logits``.
      target: shaped like ``log_probs``, probabilities (each distribution sums to 1).
      from_logits: apply ``log_softmax`` over the last axis first (stable for
        logits of 1e4), for a model that outputs logits, as fdl's classifiers do.

    Returns:
      () float, >= 0 for normalized distributions; 0 when they are equal.

    Raises:
      ValueError: a target with a different number of values.
    """
    log_probs = jnp.asarray(log_probs)
    target = _target_like(log_probs, target, "kl_divergence")
    if from_logits:
        log_probs = jax.nn.log_softmax(log_probs, axis=-1)
    return optax.kl_divergence(log_probs, target, axis=None)


def _stacked(output: jax.Array, count: int, layout: str, loss_name: str) -> jax.Array:
    """``output`` as ``(count, dim)``; a ValueError naming ``layout`` otherwise."""
    output = jnp.asarray(output)
    if output.ndim != 2 or output.shape[0] != count:
        raise ValueError(
            f"{loss_name}: expected an output ({count}, dim), the {layout} stacked on the first "
            f"axis, got shape {output.shape} — apply the encoder to an example of shape "
            f"({count}, features)"
        )
    return output


# PyTorch's ATen adds this to each squared norm of cosine_embedding_loss.
_COSINE_EPSILON = 1e-12


def cosine_embedding(output: jax.Array, target: jax.Array, *, margin: float = 0.0) -> jax.Array:
    """PyTorch's ``CosineEmbeddingLoss`` of one pair of embeddings.

    With ``cos = x1 . x2 / sqrt((|x1|^2 + 1e-12) (|x2|^2 + 1e-12))``::

        1 - cos                  if target == 1   (pull the pair together)
        max(0, cos - margin)     if target == -1  (push it below margin)

    and 0 for any other target, as in PyTorch, whose formula (epsilon on the
    squared norms, so a zero embedding gives cos = 0) this is; optax's
    ``cosine_similarity`` clips the norms instead. The engine's batch mean is
    PyTorch's ``reduction="mean"``.

    Args:
      output: (2, dim) float, the embeddings ``(x1, x2)`` of the example's pair.
      target: () or (1,), 1 (similar) or -1 (dissimilar), int or float.
      margin: in [-1, 1] (PyTorch's default 0; 0 to 0.5 is its suggestion).

    Returns:
      () float in [0, 2].

    Raises:
      ValueError: an output that is not (2, dim), or a target with more than one value.
    """
    x1, x2 = _stacked(output, 2, "pair (x1, x2)", "cosine_embedding")
    target = jnp.asarray(target)
    if target.size != 1:
        raise ValueError(f"cosine_embedding: expected one target, 1 (similar) or -1 (dissimilar), "
                         f"got target shape {target.shape}")
    target = jnp.reshape(target, ())
    squared_norms = (jnp.sum(x1 * x1) + _COSINE_EPSILON) * (jnp.sum(x2 * x2) + _COSINE_EPSILON)
    cos = jnp.sum(x1 * x2) / jnp.sqrt(squared_norms)
    return (jnp.where(target == 1, 1 - cos, 0.0)
            + jnp.where(target == -1, jnp.maximum(cos - margin, 0.0), 0.0))


def triplet_margin(output: jax.Array, target: Any = None, *, margin: float = 1.0, p: float = 2.0,
                   eps: float = 1e-6, swap: bool = False) -> jax.Array:
    """PyTorch's ``TripletMarginLoss`` of one (anchor, positive, negative) triple.

    ``max(d(a, pos) - d(a, neg) + margin, 0)`` with PyTorch's ``pairwise_distance``
    ``d(x, y) = ||x - y + eps||_p`` (eps inside the norm keeps the gradient finite
    when x = y). ``swap=True`` uses ``min(d(a, neg), d(pos, neg))`` for the
    negative distance (Balntas et al. 2016). optax's ``triplet_margin_loss`` puts
    eps outside, ``(sum(d^p) + eps)^(1/p)``, and does not take |d| for odd p,
    so this is written in PyTorch's form. The engine's batch mean is PyTorch's
    ``reduction="mean"``.

    Args:
      output: (3, dim) float, the embeddings (anchor, positive, negative).
      target: ignored (a triple carries its own supervision); give the dataset
        any targets, e.g. zeros.
      margin: > 0 (PyTorch's check), in distance units; default 1.
      p: the norm's degree, > 0 (``inf`` allowed); default 2, Euclidean.
      eps: >= 0, added to each difference before the norm (PyTorch's 1e-6).
      swap: use the distance swap.

    Returns:
      () float, >= 0.

    Raises:
      ValueError: an output that is not (3, dim).
    """
    del target
    anchor, positive, negative = _stacked(output, 3, "(anchor, positive, negative)", "triplet_margin")

    def distance(x, y):
        return jnp.linalg.norm(x - y + eps, ord=p)

    negative_distance = distance(anchor, negative)
    if swap:
        negative_distance = jnp.minimum(negative_distance, distance(positive, negative))
    return jnp.maximum(distance(anchor, positive) - negative_distance + margin, 0.0)


LOSSES: dict[str, Loss] = {
    "cross_entropy": cross_entropy,
    "binary_cross_entropy": binary_cross_entropy,
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "elbo": elbo,
    "kl_divergence": kl_divergence,
    "cosine_embedding": cosine_embedding,
    "triplet_margin": triplet_margin,
}

# Names that fix arguments of a loss above; a preset takes that loss's other arguments.
# LOSSES lists them too, as their NamedLoss (added below, once NamedLoss exists).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "elbo_bernoulli": ("elbo", {"likelihood": "bernoulli"}),
    "elbo_gaussian": ("elbo", {"likelihood": "gaussian"}),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# (loss in LOSSES, argument) -> (test of a value, what the value must be), run at build time.
_ARGUMENT_CHECKS: dict[tuple[str, str], tuple[Callable[[Any], bool], str]] = {
    ("cross_entropy", "label_smoothing"): (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    ("huber", "delta"): (lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("elbo", "likelihood"): (lambda v: isinstance(v, str) and v in ("bernoulli", "gaussian"),
                             "'bernoulli' or 'gaussian'"),
    ("kl_divergence", "from_logits"): (lambda v: isinstance(v, bool), "True or False"),
    ("cosine_embedding", "margin"): (lambda v: _is_number(v) and -1 <= v <= 1, "a number in [-1, 1]"),
    ("triplet_margin", "margin"): (lambda v: _is_number(v) and v > 0, "a number > 0"),
    ("triplet_margin", "p"): (lambda v: _is_number(v) and v > 0, "a number > 0 (inf allowed)"),
    ("triplet_margin", "eps"): (lambda v: _is_number(v) and 0 <= v < math.inf, "a number >= 0"),
    ("triplet_margin", "swap"): (lambda v: isinstance(v, bool), "True or False"),
}


def _resolve(name: str) -> tuple[str, Loss, dict[str, Any]]:
    """(the registered function's name, the function, the arguments a preset fixes)."""
    if isinstance(name, str) and name in PRESETS:
        base, fixed = PRESETS[name]
        return base, LOSSES[base], fixed
    if isinstance(name, str) and name in LOSSES:
        return name, LOSSES[name], {}
    raise ValueError(unknown_name_message("loss", name, LOSSES))


def loss_arguments(name: str) -> dict[str, Any]:
    """The arguments loss ``name`` takes -> their defaults (a preset's fixed ones left out).

    Raises:
      ValueError: unknown name, with a did-you-mean suggestion.
    """
    _, function, fixed = _resolve(name)
    return {key: parameter.default for key, parameter in inspect.signature(function).parameters.items()
            if parameter.kind is parameter.KEYWORD_ONLY and key not in fixed}


def check_argument(name: str, key: str, value: Any) -> None:
    """Raises ValueError, one line naming the loss and the argument, unless loss ``name`` takes ``key=value``.

    Example:
      >>> check_argument("huber", "deltta", 2.0)
      Traceback (most recent call last):
      ValueError: huber takes no argument 'deltta' — did you mean 'delta'?
    """
    base, _, fixed = _resolve(name)
    valid = loss_arguments(name)
    if key in fixed:
        raise ValueError(f"{name} fixes {key}={fixed[key]!r} — use loss {base} with {key} instead")
    if key not in valid:
        hint = did_you_mean(key, valid) or f"valid: {', '.join(valid) or '(none)'}"
        raise ValueError(f"{name} takes no argument {key!r} — {hint}")
    test, wanted = _ARGUMENT_CHECKS.get((base, key), (None, ""))
    if test is not None and not test(value):
        raise ValueError(f"{name} {key}: expected {wanted}, got {value!r}")


def _hashable(name: str, key: str, value: Any) -> Any:
    """Lists (YAML sequences) become tuples; other unhashable values are refused."""
    if isinstance(value, list):
        value = tuple(_hashable(name, key, item) for item in value)
    try:
        hash(value)
    except TypeError:
        raise ValueError(f"{name} {key}: expected a hashable value (number, string, bool or "
                         f"tuple), got {type(value).__name__}") from None
    return value


@dataclasses.dataclass(frozen=True)
class NamedLoss:
    """A loss by name with its arguments bound: ``loss(output, target) -> scalar``.

    Equal names and arguments give equal, hash-equal losses (so compiled programs
    are shared between them). ``args`` holds every argument the loss takes, in
    signature order, defaults filled in, so ``NamedLoss("huber")`` equals
    ``NamedLoss("huber", (("delta", 1.0),))``. ``get_loss`` is the usual way to make one.

    Example:
      >>> loss = get_loss("cross_entropy", label_smoothing=0.1)
      >>> loss == get_loss("cross_entropy", label_smoothing=0.1), loss.name
      (True, 'cross_entropy')

    Raises:
      ValueError: unknown name, an argument the loss does not take, or a bad value.
    """

    name: str
    args: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        given = dict(self.args)
        for key, value in given.items():
            check_argument(self.name, key, value)
        given = {key: _hashable(self.name, key, value) for key, value in given.items()}
        object.__setattr__(self, "args", tuple({**loss_arguments(self.name), **given}.items()))

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments the registered function gets, a preset's fixed ones included."""
        return {**_resolve(self.name)[2], **dict(self.args)}

    def __call__(self, output: Any, target: jax.Array) -> jax.Array:
        return _resolve(self.name)[1](output, target, **self.kwargs)


LOSSES.update({name: NamedLoss(name) for name in PRESETS})


def cross_entropy_with(*, label_smoothing: float) -> NamedLoss:
    """``cross_entropy`` with label smoothing bound: ``get_loss("cross_entropy", label_smoothing=...)``.

    Example:
      >>> loss = cross_entropy_with(label_smoothing=0.1)
      >>> float(loss(jnp.zeros(4), 2))  # uniform logits: log(4) whatever the smoothing
      1.386...
    """
    return NamedLoss("cross_entropy", (("label_smoothing", label_smoothing),))


def get_loss(name_or_callable: str | Loss, **args: Any) -> Loss:
    """A ``NamedLoss`` for a name and its arguments; a callable ``loss(output, target)`` passes through.

    Example:
      >>> float(get_loss("huber", delta=2.0)(jnp.array([3.0]), 0.0))  # 2 * (3 - 1)
      4.0

    Args:
      name_or_callable: a name in ``LOSSES``, or a per-example loss function.
      **args: the named loss's keyword arguments (``label_smoothing``, ``delta``,
        ``likelihood``, ``from_logits``, ``margin``, ``p``, ``eps``, ``swap``), see
        ``loss_arguments``.

    Raises:
      ValueError: unknown name (with a did-you-mean suggestion), an argument the
        loss does not take, a bad value, or arguments given with a callable.
    """
    if callable(name_or_callable):
        if args:
            raise ValueError(f"get_loss: arguments {', '.join(args)} are for a loss given by name — "
                             "bind them in the callable instead (functools.partial)")
        return name_or_callable
    return NamedLoss(name_or_callable, tuple(args.items()))
