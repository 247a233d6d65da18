"""Objectives: what one training step minimizes, for any batch and any model output.

An objective is to the engine what a ``GradientTransformation`` is to optax: a small pure
function with one signature, composed rather than subclassed::

    objective(apply, params, model_state, batch, key) -> (loss, (new_model_state, logs))

* ``apply(params, model_state, x, *, key) -> (outputs, new_model_state)`` is the BATCHED
  model (``fdl.batched(model)`` with ``train=`` bound by the engine); ``x`` is
  ``(batch, *input_shape)``.
* ``batch`` is any pytree whose leaves share a leading example axis: ``(x, y)``, a dict
  ``{"tokens": ..., "mask": ...}``, a bare array ``x``. Each objective documents the forms it takes
  and refuses the others in one line, when the step is traced.
* ``key`` is the step's PRNG key, or None (evaluation without randomness). Two streams come
  from it (see "Keys" below).
* ``loss`` is the () float32 value minimized. ``logs`` is a dict of () scalars that the engine
  averages over an epoch's steps (never ``"loss"``: the engine logs the loss itself), plus,
  optionally, ``logs[PREDICTIONS] = (outputs, targets)``: batch-shaped arrays from which the
  engine computes fdl's exact epoch metrics (``fdl.metrics``) and which it pops before averaging.
* An objective whose value depends on the optimizer step (a KL warm-up) declares a keyword-only
  parameter ``step``; the engine passes ``step=state.step`` (() int32) only when
  ``takes_step(objective)``.

Every objective here is a frozen dataclass: built from equal arguments it is equal and hash
equal (so the engine may key compiled programs on it), and it is pure, so ``jit`` and
``vmap`` (a population) apply. Averages per step are means over the batch; the engine's epoch
value is the mean of the steps' values.

Keys: the model gets ``model_key(key) = split(key)[1]``, the dropout stream of
``fdl.train.step.example_keys``; ``fdl.batched`` splits it per example exactly as that
function does, so an objective given the step key reproduces today's dropout masks (the
engine keeps ``split(key)[0]`` for its augmentation). Randomness an objective draws itself
(``info_nce``'s views) comes from ``objective_key(key) = fold_in(key, OBJECTIVE_STREAM)``,
independent of both.

The catalogue: ``supervised`` (a per-example loss of ``fdl.losses``), ``reconstruction``,
``vae_elbo``, ``masked_sequence_cross_entropy`` (next-token LM over real tokens),
``info_nce`` (SimCLR's NT-Xent); the wrappers ``with_weight_decay`` and ``with_auxiliary``
(a term the model reports through its state). By name for configs: ``get_objective`` over
``OBJECTIVES``.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from fdl import losses
from fdl.errors import did_you_mean, unknown_name_message
from fdl.typing import Params, PRNGKey, State

__all__ = [
    "PREDICTIONS", "OBJECTIVE_STREAM", "Apply", "Logs", "Objective", "Schedule",
    "model_key", "objective_key", "takes_step",
    "Supervised", "supervised", "Reconstruction", "reconstruction", "VaeElbo", "vae_elbo",
    "MaskedSequenceCrossEntropy", "masked_sequence_cross_entropy", "InfoNCE", "info_nce",
    "info_nce_loss", "WithWeightDecay", "with_weight_decay", "weights_only", "WithAuxiliary",
    "with_auxiliary", "OBJECTIVES", "objective_arguments", "get_objective",
]

PREDICTIONS = "predictions"
OBJECTIVE_STREAM = 0x0B1EC  # fold_in constant of the objective's own randomness

Apply = Callable[..., tuple[Any, State]]  # (params, model_state, x, *, key) -> (outputs, model_state)
Logs = dict[str, Any]  # name -> () scalar; PREDICTIONS -> (outputs, targets)
Objective = Callable[..., tuple[jax.Array, tuple[State, Logs]]]
Schedule = Callable[[jax.Array], jax.Array]  # () int32 step -> () float, e.g. an optax schedule

_P = inspect.Parameter
_SIGNATURE = inspect.Signature(
    [_P(name, _P.POSITIONAL_OR_KEYWORD) for name in ("apply", "params", "model_state", "batch", "key")])
_STEP_SIGNATURE = _SIGNATURE.replace(
    parameters=[*_SIGNATURE.parameters.values(), _P("step", _P.KEYWORD_ONLY, default=None)])


def model_key(key: PRNGKey | None) -> PRNGKey | None:
    """The key an objective passes to ``apply``: ``split(key)[1]``, the dropout stream of today's step."""
    return None if key is None else jax.random.split(key)[1]


def objective_key(key: PRNGKey | None) -> PRNGKey | None:
    """The key of an objective's own randomness: ``fold_in(key, OBJECTIVE_STREAM)``."""
    return None if key is None else jax.random.fold_in(key, OBJECTIVE_STREAM)


def takes_step(objective: Callable) -> bool:
    """Whether the engine must pass ``step=`` to ``objective``: its signature has a parameter ``step``.

    Reads ``inspect.signature``, so it sees through ``functools.partial`` and callable objects
    (and the signature the wrappers here declare, which has ``step`` exactly when the objective
    they wrap has it). ``**kwargs`` alone does not count: the parameter must be named.

    Example:
      >>> takes_step(vae_elbo(warmup_steps=1000)), takes_step(vae_elbo()), takes_step(supervised("mse"))
      (True, False, False)
    """
    try:
        parameter = inspect.signature(objective).parameters.get("step")
    except (TypeError, ValueError):  # a builtin without a signature cannot declare step
        return False
    return parameter is not None and parameter.kind in (_P.KEYWORD_ONLY, _P.POSITIONAL_OR_KEYWORD)


def _declare_signature(objective: Any, uses_step: bool) -> None:
    # `__call__` always accepts step=None; the instance's __signature__ (read first by
    # inspect.signature, PEP 362) says whether this one needs it, so takes_step is exact.
    object.__setattr__(objective, "__signature__", _STEP_SIGNATURE if uses_step else _SIGNATURE)


def _call(objective: Objective, apply, params, model_state, batch, key, step):
    """Calls a wrapped objective, passing ``step`` only when it takes one."""
    if takes_step(objective):
        return objective(apply, params, model_state, batch, key, step=step)
    return objective(apply, params, model_state, batch, key)


def _describe(batch: Any) -> str:
    if isinstance(batch, Mapping):
        return f"a dict with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)}"
    if hasattr(batch, "shape"):
        return f"an array of shape {tuple(batch.shape)}"
    return f"a {type(batch).__name__}"


def _inputs_and_targets(kind: str, batch: Any) -> tuple[Any, Any]:
    """``(x, y)`` of a batch that is a pair (a tuple, a list, an ``fdl.data.Split``)."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{kind}: expected a batch (x, y), got {_describe(batch)} — pass the inputs "
                         "and targets as a pair")
    x, y = batch
    if y is None:
        raise ValueError(f"{kind}: the batch has no targets (y is None) — train unlabeled data with "
                         "reconstruction() or vae_elbo()")
    return x, y


def _inputs(kind: str, batch: Any) -> Any:
    """``x`` of a batch that is a bare array, ``(x,)`` or ``(x, y)`` (then y, labels, is not used)."""
    if isinstance(batch, (tuple, list)):
        if len(batch) in (1, 2) and batch[0] is not None:
            return batch[0]
    elif not isinstance(batch, Mapping) and batch is not None:
        return batch
    raise ValueError(f"{kind}: expected a batch x, (x,) or (x, y), got {_describe(batch)} — the input "
                     "is its own target")


def _merge(kind: str, logs: Logs, extra: Logs) -> Logs:
    clash = sorted(set(logs) & set(extra))
    if clash:
        raise ValueError(f"{kind}: the wrapped objective already logs {clash[0]!r} — give this term "
                         "another name")
    return {**logs, **extra}


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _loss(kind: str, loss: str | losses.Loss, loss_args: Mapping[str, Any]) -> losses.Loss:
    """``fdl.losses.get_loss(loss, **loss_args)``, an unknown argument named with the objective's."""
    if isinstance(loss, str):
        valid = losses.loss_arguments(loss)  # an unknown loss name raises here, with did-you-mean
        for key in loss_args:
            if key not in valid:
                hint = did_you_mean(key, [*valid, "loss"]) or f"valid: {', '.join(valid) or '(none)'}"
                raise ValueError(f"{kind}: loss {loss} takes no argument {key!r} — {hint}")
    return losses.get_loss(loss, **loss_args)


@dataclasses.dataclass(frozen=True)
class Supervised:
    """``supervised(loss)``: the mean over the batch of a per-example loss. Build it with ``supervised``."""

    loss: losses.Loss

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None):
        x, y = _inputs_and_targets("supervised", batch)
        outputs, new_model_state = apply(params, model_state, x, key=model_key(key))
        value = jnp.mean(jax.vmap(self.loss)(outputs, y))
        return value, (new_model_state, {PREDICTIONS: (outputs, y)})


def supervised(loss: str | losses.Loss = "cross_entropy", **loss_args: Any) -> Supervised:
    """The objective of ``fit(model, (x, y), loss=...)``: the batch mean of a per-example loss.

    ``loss = mean_i loss(outputs_i, y_i)`` with ``outputs = apply(params, model_state, x)``:
    the very numbers of ``fdl.train.step.make_loss_fn`` for the same step key (the model gets
    ``model_key(key)``, the dropout stream of that function). Units are the loss's (nats for
    the cross-entropies). ``logs[PREDICTIONS] = (outputs, y)``, so the engine computes exact
    epoch metrics (accuracy, F1, ...) from them.

    Example:
      >>> import functools
      >>> from fdl.objectives import supervised
      >>> objective = supervised("cross_entropy", label_smoothing=0.1)
      >>> apply = functools.partial(fdl.batched(model), train=True)
      >>> loss, (new_model_state, logs) = objective(apply, state.params, state.model_state, (x, y),
      ...                                           jax.random.key(0))
      >>> loss.shape, list(logs), logs["predictions"][0].shape
      ((), ['predictions'], (256, 10))
      >>> objective == supervised("cross_entropy", label_smoothing=0.1)
      True

    Args:
      loss: a name in ``fdl.losses.LOSSES`` or a per-example ``loss(output, target) -> ()``.
      **loss_args: the named loss's arguments (``label_smoothing``, ``delta``, ``likelihood``).

    Batch:
      ``(x, y)`` (a tuple, list or ``fdl.data.Split``): x ``(batch, *input_shape)``, y
      ``(batch, *target_shape)``.

    Raises:
      ValueError: unknown loss or loss argument (did-you-mean); when traced, a batch that is
        not a pair or has ``y`` None.
    """
    return Supervised(_loss("supervised", loss, loss_args))


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """``reconstruction(loss)``: the batch mean of ``loss(outputs_i, x_i)``. Build it with ``reconstruction``."""

    loss: losses.Loss

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None):
        x = _inputs("reconstruction", batch)
        outputs, new_model_state = apply(params, model_state, x, key=model_key(key))
        value = jnp.mean(jax.vmap(self.loss)(outputs, x))
        return value, (new_model_state, {"reconstruction": value, PREDICTIONS: (outputs, x)})


def reconstruction(loss: str | losses.Loss = "mse", **loss_args: Any) -> Reconstruction:
    """An autoencoder's objective: the input is its own target.

    ``loss = mean_i loss(outputs_i, x_i)``; with ``"mse"`` the mean squared error over every
    element of the batch (squared input units, as ``fdl.losses.mse``). ``logs`` holds
    ``"reconstruction"`` (the same value, kept apart from ``"loss"`` because a wrapper may add
    terms to the loss) and ``PREDICTIONS: (outputs, x)`` (for regression metrics: mse, mae).

    Example:
      >>> import functools
      >>> from fdl.objectives import reconstruction
      >>> identity = functools.partial(fdl.batched(nn.Identity()), train=True)
      >>> loss, (_, logs) = reconstruction("mse")(identity, {}, {}, x, None)
      >>> float(loss), float(logs["reconstruction"])
      (0.0, 0.0)

    Args:
      loss: a name in ``fdl.losses.LOSSES`` or a per-example ``loss(output, target) -> ()``.
      **loss_args: the named loss's arguments.

    Batch:
      a bare array ``x`` ``(batch, *input_shape)``, or ``(x,)``, or ``(x, y)``: a labelled
      dataset (an ``fdl.data.Split``) trains unsupervised, its labels ``y`` unused.

    Raises:
      ValueError: unknown loss or loss argument; when traced, a dict or empty batch.
    """
    return Reconstruction(_loss("reconstruction", loss, loss_args))


def _negative_log_likelihood(reconstruction: jax.Array, x: jax.Array, *, likelihood: str) -> jax.Array:
    """-log p(x | z) of one example in nats, summed over data dimensions, as in ``losses.elbo_loss``.

    ``elbo_loss`` at the posterior N(0, I), whose KL is exactly 0.0: the likelihoods (and the
    Gaussian's constant) stay defined in one place.
    """
    zeros = jnp.zeros((1,), jnp.result_type(reconstruction))
    return losses.elbo_loss(reconstruction, x, zeros, zeros, likelihood=likelihood)


@dataclasses.dataclass(frozen=True)
class VaeElbo:
    """The VAE's negative ELBO with a KL weight; build it with ``vae_elbo``."""

    likelihood: str = "bernoulli"
    kl_weight: float | Schedule = 1.0
    warmup_steps: int = 0

    def __post_init__(self):
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"vae_elbo likelihood: expected 'bernoulli' or 'gaussian', got {self.likelihood!r}")
        if not callable(self.kl_weight) and not (_is_number(self.kl_weight) and self.kl_weight >= 0):
            raise ValueError(f"vae_elbo kl_weight: expected a number >= 0 or a schedule step -> weight, "
                             f"got {self.kl_weight!r}")
        if not (isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool)
                and self.warmup_steps >= 0):
            raise ValueError(f"vae_elbo warmup_steps: expected an int >= 0, got {self.warmup_steps!r}")
        if callable(self.kl_weight) and self.warmup_steps:
            raise ValueError("vae_elbo: give a kl_weight schedule or warmup_steps, not both — put the "
                             "warm-up in the schedule")
        _declare_signature(self, self.uses_step)

    @property
    def uses_step(self) -> bool:
        """Whether the KL weight depends on the optimizer step."""
        return callable(self.kl_weight) or self.warmup_steps > 0

    def weight(self, step: jax.Array | None) -> jax.Array:
        """() float32 KL weight at optimizer step ``step``."""
        if not self.uses_step:
            return jnp.asarray(self.kl_weight, jnp.float32)
        if step is None:
            raise ValueError("vae_elbo: this KL weight changes with the optimizer step, so the call needs "
                             "step= (the engine passes it when takes_step(objective))")
        if callable(self.kl_weight):
            return jnp.asarray(self.kl_weight(step), jnp.float32)
        return optax.linear_schedule(0.0, float(self.kl_weight), self.warmup_steps)(step).astype(jnp.float32)

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None, *,
                 step: jax.Array | None = None):
        x = _inputs("vae_elbo", batch)
        weight = self.weight(step)  # before the forward pass: a missing step fails at once
        outputs, new_model_state = apply(params, model_state, x, key=model_key(key))
        if not isinstance(outputs, (tuple, list)) or len(outputs) != 3:
            raise ValueError(f"vae_elbo: expected the model to output (reconstruction, mean, log_var), got "
                             f"{_describe(outputs)} — use fdl.nn.models.vae or a model of that output")
        decoded, mean, log_var = outputs
        nll = jax.vmap(lambda r, target: _negative_log_likelihood(r, target, likelihood=self.likelihood))(
            decoded, x)
        reconstruction_term = jnp.mean(nll)
        kl = jnp.mean(jax.vmap(losses.gaussian_kl)(mean, log_var))
        value = reconstruction_term + weight * kl
        return value, (new_model_state, {"reconstruction": reconstruction_term, "kl": kl, "kl_weight": weight})


def vae_elbo(likelihood: str = "bernoulli", *, kl_weight: float | Schedule = 1.0,
             warmup_steps: int = 0) -> VaeElbo:
    """A VAE's negative ELBO, in nats per example, with an optional KL weight or warm-up.

    The model outputs ``(reconstruction, mean, log_var)`` per example, as
    ``fdl.nn.models.vae``: decoder logits of p(x_i = 1) for ``"bernoulli"`` (x in [0, 1]), the
    mean of a unit-variance Gaussian for ``"gaussian"``; ``mean``, ``log_var`` ``(latent,)``
    of q(z | x). With ``R = mean_i -log p(x_i | z_i)`` (summed over data dimensions, the
    Gaussian keeping its ``0.5 log 2 pi``) and ``KL = mean_i KL(q(z | x_i) || N(0, I))``
    (summed over latent dimensions)::

        loss = R + w(step) * KL

    With ``w = 1`` this is ``fit(..., loss="elbo_bernoulli")`` exactly; ``w < 1`` is a beta-VAE
    weight, and a weight rising from 0 (KL annealing, Bowman et al. 2016) keeps the posterior
    from collapsing early. ``logs``: ``"reconstruction"`` (R), ``"kl"`` and ``"kl_weight"``.

    Example:
      >>> import functools
      >>> from fdl.objectives import vae_elbo
      >>> vae = nn.models.vae(latent=2, hidden=(8,))
      >>> _, params, model_state = vae.init(jax.random.key(0), (40,))
      >>> apply = functools.partial(fdl.batched(vae), train=True)
      >>> objective = vae_elbo("bernoulli", warmup_steps=1000)  # w = min(step / 1000, 1)
      >>> takes_step(objective)
      True
      >>> loss, (_, logs) = objective(apply, params, model_state, jax.nn.sigmoid(x), jax.random.key(0),
      ...                             step=jnp.int32(250))
      >>> sorted(logs), float(logs["kl_weight"])
      (['kl', 'kl_weight', 'reconstruction'], 0.25)

    Args:
      likelihood: ``"bernoulli"`` or ``"gaussian"``.
      kl_weight: the weight w >= 0, or a schedule ``step -> w`` (an optax schedule); with a
        schedule the objective takes ``step``. A schedule is compared by identity, so build it
        once: two equal numbers make equal objectives, two fresh schedules do not.
      warmup_steps: with a number ``kl_weight``, raise w linearly from 0 to ``kl_weight``
        over this many optimizer steps (then it takes ``step``); 0: no warm-up.

    Batch:
      a bare array ``x``, ``(x,)`` or ``(x, y)`` (``y`` unused), as ``reconstruction``.

    Raises:
      ValueError: bad likelihood, weight or warm-up, or both a schedule and ``warmup_steps``;
        when traced, a model without the three outputs, or a schedule called without ``step``.
    """
    return VaeElbo(likelihood, kl_weight, warmup_steps)


@dataclasses.dataclass(frozen=True)
class MaskedSequenceCrossEntropy:
    """Next-token cross-entropy over real tokens; build it with ``masked_sequence_cross_entropy``."""

    tokens: str = "tokens"
    mask: str = "mask"

    def __post_init__(self):
        for field in ("tokens", "mask"):
            if not isinstance(getattr(self, field), str):
                raise ValueError(f"masked_sequence_cross_entropy {field}: expected the batch key (a string), "
                                 f"got {getattr(self, field)!r}")

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None):
        kind = "masked_sequence_cross_entropy"
        if not isinstance(batch, Mapping) or self.tokens not in batch:
            where = f"{_describe(batch)}"
            hint = did_you_mean(self.tokens, batch) if isinstance(batch, Mapping) else ""
            raise ValueError(f"{kind}: expected a dict batch with key {self.tokens!r}, got {where}"
                             f"{' — ' + hint if hint else ''}")
        tokens = batch[self.tokens]
        if tokens.ndim != 2 or tokens.shape[1] < 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise ValueError(f"{kind}: expected {self.tokens!r} (batch, length >= 2) int token ids, got "
                             f"shape {tuple(tokens.shape)} dtype {tokens.dtype}")
        batch_size, length = tokens.shape
        counted = batch[self.mask][:, 1:] != 0 if self.mask in batch else jnp.ones((batch_size, length - 1), bool)
        logits, new_model_state = apply(params, model_state, tokens[:, :-1], key=model_key(key))
        if jnp.ndim(logits) != 3 or tuple(logits.shape[:2]) != (batch_size, length - 1):
            raise ValueError(f"{kind}: expected logits ({batch_size}, {length - 1}, vocab) for tokens[:, :-1], "
                             f"got shape {tuple(jnp.shape(logits))} — the model must map (length,) tokens "
                             "to (length, vocab) logits")
        # where, not multiplication by the mask: padded logits (NaN, say) and padded ids (any
        # value) never reach the loss, its value or its gradient.
        safe_logits = jnp.where(counted[..., None], logits, 0.0)
        safe_targets = jnp.where(counted, tokens[:, 1:], 0)
        token_losses = optax.softmax_cross_entropy_with_integer_labels(safe_logits, safe_targets)
        count = jnp.sum(counted)
        value = jnp.sum(jnp.where(counted, token_losses, 0.0)) / jnp.maximum(count, 1)
        logs = {"bits_per_token": value / math.log(2), "tokens": count.astype(jnp.float32)}
        return value, (new_model_state, logs)


def masked_sequence_cross_entropy(*, tokens: str = "tokens", mask: str = "mask") -> MaskedSequenceCrossEntropy:
    """Next-token language modelling: the mean cross-entropy over the real tokens of a padded batch.

    The model maps ``tokens[:-1]`` ``(T - 1,)`` int ids of one sequence to logits
    ``(T - 1, vocab)``; position t predicts ``tokens[t + 1]`` and counts when
    ``mask[t + 1]`` is nonzero (the first token is never a target). With C the counted
    positions of the whole batch::

        loss = sum_{(i, t) in C} -log softmax(logits[i, t])[tokens[i, t + 1]] / max(|C|, 1)

    a mean over real tokens, not over positions or sequences, in nats per token. Padding
    contributes nothing, even NaN logits or out-of-range ids there (selected away with
    ``where``). ``logs``: ``"bits_per_token"`` (loss / ln 2) and ``"tokens"`` (|C| in the
    step's batch; the engine's epoch value is the mean per step). A batch without the mask
    key counts every token.

    Example:
      >>> from fdl.objectives import masked_sequence_cross_entropy
      >>> def uniform(params, model_state, x, *, key=None):  # 4-token vocabulary, equal logits
      ...     return jnp.zeros(x.shape + (4,)), model_state
      >>> batch = {"tokens": jnp.array([[1, 2, 3, 0], [2, 1, 0, 0]]),
      ...          "mask": jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)}
      >>> loss, (_, logs) = masked_sequence_cross_entropy()(uniform, {}, {}, batch, None)
      >>> float(logs["bits_per_token"]), float(logs["tokens"])  # log2(4) bits; 2 + 1 targets
      (2.0, 3.0)

    Args:
      tokens: the batch key of the ``(batch, T)`` int token ids, T >= 2.
      mask: the batch key of the ``(batch, T)`` bool or 0/1 float mask, nonzero = a real token
        (a float mask is an indicator, not a weight).

    Raises:
      ValueError: a key that is not a string; when traced, a batch without ``tokens``
        (did-you-mean), ids not ``(batch, T >= 2)`` ints, logits not ``(batch, T - 1, vocab)``.
    """
    return MaskedSequenceCrossEntropy(tokens, mask)


def info_nce_loss(embeddings_1: jax.Array, embeddings_2: jax.Array, temperature: float
                  ) -> tuple[jax.Array, jax.Array]:
    """SimCLR's NT-Xent (Chen et al. 2020, eq. 1) of two views' embeddings, and its accuracy.

    With the 2n rows ``z = normalize([embeddings_1; embeddings_2])``, ``s_ij = z_i . z_j /
    temperature`` and p(i) the other view of example i (i + n or i - n)::

        l_i  = -log( exp(s_{i, p(i)}) / sum_{k != i} exp(s_ik) )
        loss = mean_i l_i     (over all 2n rows: both (i, j) and (j, i) as in the paper)

    Args:
      embeddings_1, embeddings_2: (n, d) float, the two views of the same n examples.
      temperature: tau > 0.

    Returns:
      (() loss in nats, () fraction of the 2n rows whose positive has the top similarity).
    """
    n = embeddings_1.shape[0]
    z = jnp.concatenate([embeddings_1, embeddings_2]).astype(jnp.float32)
    # sqrt(max(|z|^2, eps^2)), not max(|z|, eps): finite gradient at z = 0.
    z = z * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(z), axis=-1, keepdims=True), 1e-24))
    similarity = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, z @ z.T / temperature)
    positives = (jnp.arange(2 * n) + n) % (2 * n)
    loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(similarity, positives))
    accuracy = jnp.mean(jnp.argmax(similarity, axis=-1) == positives)
    return loss, accuracy.astype(jnp.float32)


@dataclasses.dataclass(frozen=True)
class InfoNCE:
    """SimCLR's contrastive objective; build it with ``info_nce``."""

    temperature: float = 0.1
    augment: Callable[[PRNGKey, jax.Array], jax.Array] | None = None

    def __post_init__(self):
        if not (_is_number(self.temperature) and self.temperature > 0):
            raise ValueError(f"info_nce temperature: expected a number > 0, got {self.temperature!r}")

    def views(self, batch, key: PRNGKey | None) -> tuple[Any, Any]:
        """The two views of the batch's n examples: the batch's pair, or two draws of ``augment``."""
        if self.augment is None:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise ValueError(f"info_nce: expected a batch (view_1, view_2), got {_describe(batch)} — "
                                 "pass two augmented views of the same examples, or give info_nce an augment")
            view_1, view_2 = batch
            shapes_1, shapes_2 = ([jnp.shape(leaf) for leaf in jax.tree.leaves(view)] for view in batch)
            if shapes_1 != shapes_2:
                raise ValueError(f"info_nce: the two views must have one shape, got {', '.join(map(str, shapes_1))} "
                                 f"and {', '.join(map(str, shapes_2))}")
            return view_1, view_2
        x = _inputs("info_nce", batch)
        if key is None:
            raise ValueError("info_nce: augment draws two views, so the call needs a key")
        n = jax.tree.leaves(x)[0].shape[0]
        keys = jax.random.split(objective_key(key), 2)
        return tuple(jax.vmap(self.augment)(jax.random.split(view_key, n), x) for view_key in keys)

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None):
        view_1, view_2 = self.views(batch, key)
        n = jax.tree.leaves(view_1)[0].shape[0]
        both = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), view_1, view_2)
        embeddings, new_model_state = apply(params, model_state, both, key=model_key(key))
        if jnp.ndim(embeddings) != 2:
            raise ValueError(f"info_nce: expected (batch, features) embeddings, got shape "
                             f"{tuple(jnp.shape(embeddings))} — end the model with Flatten() or Dense")
        value, accuracy = info_nce_loss(embeddings[:n], embeddings[n:], self.temperature)
        return value, (new_model_state, {"contrastive_accuracy": accuracy})


def info_nce(temperature: float = 0.1, *, augment: Callable[[PRNGKey, jax.Array], jax.Array] | None = None
             ) -> InfoNCE:
    """SimCLR's NT-Xent: pull two views of an example together, push the batch's others apart.

    Both views go through the model as ONE batch of 2n (so BatchNorm's statistics cover both,
    as in SimCLR); the (2n, d) outputs are the embeddings ``z`` (the projection head's output),
    and ``loss = info_nce_loss(z[:n], z[n:], temperature)``: cosine similarities over
    ``temperature``, each row's own similarity excluded, cross-entropy towards the other view,
    mean over the 2n rows (nats). The examples are coupled: the loss of one depends on the
    rest of the batch. ``logs``: ``"contrastive_accuracy"``.

    Example:
      >>> import functools
      >>> from fdl.objectives import info_nce
      >>> identity = functools.partial(fdl.batched(nn.Identity()), train=True)
      >>> views = (jnp.eye(4), 2 * jnp.eye(4))  # each example alike in both views, unlike the rest
      >>> loss, (_, logs) = info_nce(0.1)(identity, {}, {}, views, None)
      >>> float(logs["contrastive_accuracy"]), bool(loss < 1e-3)  # log(1 + 6 e^-10)
      (1.0, True)

    Args:
      temperature: tau > 0 (SimCLR uses 0.1 to 0.5).
      augment: optional per-example ``augment(key, x) -> x`` (as ``fdl.data.random_shift``): then
        the batch is plain ``x`` and the views are two draws of it with keys from
        ``objective_key(key)``.

    Batch:
      ``(view_1, view_2)``, each ``(n, *input_shape)``; with ``augment``, ``x``, ``(x,)`` or ``(x, y)``.

    Raises:
      ValueError: temperature not > 0; when traced, a batch not a pair of equal shapes, or
        outputs not ``(2n, d)``.
    """
    return InfoNCE(temperature, augment)


def weights_only(path: tuple, leaf: jax.Array) -> bool:
    """``with_weight_decay``'s default: leaves of rank > 1 (kernels, embeddings), not biases or norm scales."""
    del path
    return jnp.ndim(leaf) > 1


def _names(path) -> tuple:
    """A jax key path as plain names: ``("encoder", "dense_0", "w")``."""
    return tuple(getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry))) for entry in path)


@dataclasses.dataclass(frozen=True)
class WithWeightDecay:
    """An objective plus an L2 penalty on the params; build it with ``with_weight_decay``."""

    objective: Objective
    weight_decay: float
    include: Callable[[tuple, jax.Array], bool] = weights_only

    def __post_init__(self):
        if not callable(self.objective):
            raise ValueError(f"with_weight_decay: expected an objective (a callable), got {self.objective!r}")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"with_weight_decay weight_decay: expected a number >= 0, got {self.weight_decay!r}")
        _declare_signature(self, takes_step(self.objective))

    def penalty(self, params: Params) -> jax.Array:
        """() ``0.5 * weight_decay * sum of the included leaves' squares``."""
        leaves = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
                  if self.include(_names(path), leaf)]
        squares = sum((jnp.sum(jnp.square(jnp.asarray(leaf, jnp.float32))) for leaf in leaves),
                      jnp.zeros((), jnp.float32))
        return 0.5 * self.weight_decay * squares

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None, *,
                 step: jax.Array | None = None):
        value, (new_model_state, logs) = _call(self.objective, apply, params, model_state, batch, key, step)
        term = self.penalty(params)
        return value + term, (new_model_state, _merge("with_weight_decay", logs, {"weight_decay": term}))


def with_weight_decay(objective: Objective, weight_decay: float, *,
                      include: Callable[[tuple, jax.Array], bool] = weights_only) -> WithWeightDecay:
    """``objective`` plus ``0.5 * weight_decay * sum(w ** 2)`` over the params ``include`` picks.

    Coupled L2 regularization in the loss: its gradient ``weight_decay * w`` is PyTorch's SGD
    ``weight_decay`` and Keras' ``kernel_regularizer=l2(weight_decay / 2)``; with Adam it is NOT
    AdamW's decoupled decay (use the optimizer's ``weight_decay`` for that). By default only
    weights are decayed (rank > 1: kernels, embeddings), not biases or normalization scales.
    ``logs["weight_decay"]`` is the term; it takes ``step`` when ``objective`` does.

    Example:
      >>> from fdl.objectives import reconstruction, with_weight_decay
      >>> def keep(params, model_state, x, *, key=None):  # a perfect autoencoder
      ...     return x, model_state
      >>> params = {"dense": {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}}  # b is not decayed
      >>> loss, (_, logs) = with_weight_decay(reconstruction(), 0.1)(keep, params, {}, x, None)
      >>> round(float(loss), 6), round(float(logs["weight_decay"]), 6)  # 0.5 * 0.1 * 6
      (0.3, 0.3)

    Args:
      objective: the objective to regularize.
      weight_decay: >= 0, per squared param unit.
      include: ``include(path, leaf) -> bool`` at trace time; ``path`` is the leaf's tuple of
        names, e.g. ``("encoder", "dense_0", "w")``, so ``lambda path, leaf: path[-1] == "w"``.

    Raises:
      ValueError: an objective that is not callable or a weight decay < 0; when traced, an
        objective that already logs ``"weight_decay"``.
    """
    return WithWeightDecay(objective, weight_decay, include)


@dataclasses.dataclass(frozen=True)
class WithAuxiliary:
    """An objective plus a term the model reports through its state; build it with ``with_auxiliary``."""

    objective: Objective
    select: str | Callable[[State], jax.Array]
    weight: float = 1.0
    name: str = "auxiliary"

    def __post_init__(self):
        if not callable(self.objective):
            raise ValueError(f"with_auxiliary: expected an objective (a callable), got {self.objective!r}")
        if not (callable(self.select) or isinstance(self.select, str)):
            raise ValueError(f"with_auxiliary select: expected a state entry name or a function of the model "
                             f"state, got {self.select!r}")
        if not _is_number(self.weight):
            raise ValueError(f"with_auxiliary weight: expected a number, got {self.weight!r}")
        if not isinstance(self.name, str) or self.name in ("loss", PREDICTIONS):
            raise ValueError(f"with_auxiliary name: {self.name!r} is reserved — name the term for what it is, "
                             "e.g. 'balance'")
        _declare_signature(self, takes_step(self.objective))

    def value(self, model_state: State) -> jax.Array:
        """() the unweighted term: ``select(model_state)``, or the sum of the state entries named ``select``."""
        if callable(self.select):
            value = self.select(model_state)
            where = "select(model_state)"
        else:
            found = [(path, leaf) for path, leaf in jax.tree_util.tree_flatten_with_path(model_state)[0]
                     if _names(path) and _names(path)[-1] == self.select]
            if not found:
                entries = sorted("/".join(map(str, _names(path)))
                                 for path, _ in jax.tree_util.tree_flatten_with_path(model_state)[0])
                raise ValueError(f"with_auxiliary: the model state has no entry named {self.select!r} (it has: "
                                 f"{', '.join(entries) or 'no entries'}) — a layer must return it in its state")
            for path, leaf in found:
                if jnp.shape(leaf) != ():
                    raise ValueError(f"with_auxiliary: model state entry {'/'.join(map(str, _names(path)))} "
                                     f"has shape {jnp.shape(leaf)}, expected a () scalar — reduce it in the "
                                     "layer (jax.lax.pmean over 'batch')")
            value, where = sum(leaf for _, leaf in found), self.select
        if jnp.shape(value) != ():
            raise ValueError(f"with_auxiliary: {where} has shape {jnp.shape(value)}, expected a () scalar")
        return jnp.asarray(value, jnp.float32)

    def __call__(self, apply: Apply, params: Params, model_state: State, batch, key: PRNGKey | None, *,
                 step: jax.Array | None = None):
        value, (new_model_state, logs) = _call(self.objective, apply, params, model_state, batch, key, step)
        term = self.weight * self.value(new_model_state)
        return value + term, (new_model_state, _merge("with_auxiliary", logs, {self.name: term}))


def with_auxiliary(objective: Objective, select: str | Callable[[State], jax.Array], weight: float = 1.0,
                   name: str = "auxiliary") -> WithAuxiliary:
    """``objective`` plus ``weight * value``, a term the MODEL reports through its state.

    A layer that owns a penalty (a mixture-of-experts balance loss, an activity
    regularizer) computes it in its forward pass and returns it as a state entry; this
    wrapper reads it from the NEW model state of the same forward pass, so the gradient flows
    through it. ``select`` is the entry's name (every state leaf with that name counts, summed:
    one per MoE layer) or a function ``model_state -> ()``. ``fdl.batched`` keeps one state for
    the batch, so the layer reduces its per-example values over the axis ``"batch"``
    (``jax.lax.pmean``), and its ``init`` returns the entry (a zero) so the state keeps its
    structure. ``logs[name]`` is the weighted term; it takes ``step`` when ``objective`` does.

    Example:
      >>> import functools
      >>> from fdl.objectives import supervised, with_auxiliary
      >>> def ActivityPenalty():  # reports the batch's mean squared activation as "aux_loss"
      ...     def init(key, input_shape):
      ...         return input_shape, {}, {"aux_loss": jnp.zeros(())}
      ...     def apply(params, state, x, *, key=None, train=False):
      ...         return x, {"aux_loss": jax.lax.pmean(jnp.mean(x ** 2), "batch")}
      ...     return nn.Layer(init, apply, "ActivityPenalty")
      >>> net = nn.serial(nn.Dense(3), ActivityPenalty())
      >>> _, params, model_state = net.init(jax.random.key(0), (40,))
      >>> apply = functools.partial(fdl.batched(net), train=True)
      >>> objective = with_auxiliary(supervised("mse"), "aux_loss", weight=0.01, name="activity")
      >>> loss, (new_model_state, logs) = objective(apply, params, model_state, (x, x[:, :3]), None)
      >>> bool(jnp.isclose(logs["activity"], 0.01 * new_model_state["activity_penalty_1"]["aux_loss"]))
      True

    Args:
      objective: the objective to add the term to.
      select: the name of the state entry, or ``select(new_model_state) -> ()``.
      weight: the term's weight.
      name: its key in ``logs`` (not ``"loss"`` or ``PREDICTIONS``).

    Raises:
      ValueError: bad arguments; when traced, no state entry of that name (the entries the
        state has are listed), an entry or value that is not a () scalar, a name the wrapped
        objective already logs.
    """
    return WithAuxiliary(objective, select, weight, name)


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "supervised": supervised,
    "reconstruction": reconstruction,
    "vae_elbo": vae_elbo,
    "masked_sequence_cross_entropy": masked_sequence_cross_entropy,
    "info_nce": info_nce,
}


def objective_arguments(name: str) -> dict[str, Any]:
    """The named arguments objective ``name`` takes -> their defaults (``inspect.Parameter.empty``: required).

    ``supervised`` and ``reconstruction`` also take their loss's arguments
    (``fdl.losses.loss_arguments``).

    Raises:
      ValueError: unknown name, with a did-you-mean suggestion.
    """
    if not isinstance(name, str) or name not in OBJECTIVES:
        raise ValueError(unknown_name_message("objective", name, OBJECTIVES))
    return {key: parameter.default for key, parameter in inspect.signature(OBJECTIVES[name]).parameters.items()
            if parameter.kind is not _P.VAR_KEYWORD}


def get_objective(name_or_callable: str | Objective, **args: Any) -> Objective:
    """The objective ``name`` built with ``args``; a callable objective passes through.

    Each argument is checked against the builder's signature first, so a misspelt one is a
    one-line error with a suggestion; values are checked by the builder.

    Example:
      >>> get_objective("vae_elbo", kl_weight=0.5) == vae_elbo(kl_weight=0.5)
      True
      >>> get_objective("vae_elbo", kl_wieght=0.5)
      Traceback (most recent call last):
      ValueError: objective vae_elbo takes no argument 'kl_wieght' — did you mean 'kl_weight'?

    Args:
      name_or_callable: a name in ``OBJECTIVES`` or an objective.
      **args: the builder's arguments (``loss``, ``kl_weight``, ``temperature``, ...).

    Raises:
      ValueError: unknown name or argument (did-you-mean), a bad value, or arguments given
        with a callable.
    """
    if callable(name_or_callable):
        if args:
            raise ValueError(f"get_objective: arguments {', '.join(args)} are for an objective given by name — "
                             "build the callable with them instead")
        return name_or_callable
    name = name_or_callable
    valid = objective_arguments(name)
    takes_loss_arguments = any(parameter.kind is _P.VAR_KEYWORD
                               for parameter in inspect.signature(OBJECTIVES[name]).parameters.values())
    if not takes_loss_arguments:  # supervised/reconstruction check their loss's arguments themselves
        for key in args:
            if key not in valid:
                hint = did_you_mean(key, valid) or f"valid: {', '.join(valid) or '(none)'}"
                raise ValueError(f"objective {name} takes no argument {key!r} — {hint}")
    missing = [key for key, default in valid.items() if default is _P.empty and key not in args]
    if missing:
        raise ValueError(f"objective {name} needs argument {missing[0]!r}")
    return OBJECTIVES[name](**args)
