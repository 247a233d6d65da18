"""fdl.objectives against today's step, numpy hand computations and closed forms."""
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from fdl import losses, nn
from fdl.data import Split
from fdl.nn import batched
from fdl.objectives import (
    OBJECTIVES, PREDICTIONS, get_objective, info_nce, info_nce_loss, masked_sequence_cross_entropy,
    model_key, objective_arguments, objective_key, reconstruction, supervised, takes_step, vae_elbo,
    with_auxiliary, with_weight_decay,
)
from fdl.train.step import make_loss_fn

# float32 reductions of O(1) values over a few dozen terms: 1e-5 relative is a few ulps each.
TOL = dict(rtol=1e-5, atol=1e-6)
KEY = jax.random.key(0)


def train_apply(model):
    return functools.partial(batched(model), train=True)


def eval_apply(model):
    return functools.partial(batched(model), train=False)


def run(objective, *args, **kwargs):
    """`objective(*args, **kwargs)` compiled (apply static): one compile beats op-by-op dispatch."""
    return jax.jit(objective, static_argnums=0)(*args, **kwargs)


def rng(seed=0):
    return np.random.default_rng(seed)


def numpy_init(model, input_shape, seed=0):
    """(params, state) of the model's structure and shapes, drawn in numpy: no init program to run.

    Params ~ N(0, 0.5^2); state zeros (BatchNorm's running variance included: only train mode,
    which normalizes with the batch's statistics, is used with it here).
    """
    _, params, state = jax.eval_shape(lambda key: model.init(key, input_shape), KEY)
    draw = rng(seed)
    params = jax.tree.map(lambda leaf: (0.5 * draw.normal(size=leaf.shape)).astype(leaf.dtype), params)
    return params, jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), state)


def np_log_softmax(logits):
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


# --- supervised ---------------------------------------------------------------------------

CLASSIFIER = nn.serial(nn.Dense(8), nn.BatchNorm(), nn.Relu(), nn.Dropout(0.5), nn.Dense(3))


def test_supervised_equals_todays_make_loss_fn():
    # Dropout and BatchNorm: the same dropout masks (key streams) and batch statistics (axis).
    loss = "cross_entropy"
    x = rng().normal(size=(16, 5)).astype(np.float32)
    y = rng(1).integers(0, 3, 16).astype(np.int32)
    params, model_state = numpy_init(CLASSIFIER, (5,))
    per_example = losses.get_loss(loss)
    (expected, (expected_state, expected_outputs)), expected_grads = jax.jit(jax.value_and_grad(
        make_loss_fn(CLASSIFIER, per_example), has_aux=True))(params, model_state, x, y, KEY)
    objective = supervised(loss)
    (value, (new_state, logs)), grads = jax.jit(jax.value_and_grad(objective, argnums=1, has_aux=True),
                                                static_argnums=0)(train_apply(CLASSIFIER), params,
                                                                  model_state, (x, y), KEY)
    assert value.shape == () and value.dtype == jnp.float32
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    outputs, targets = logs[PREDICTIONS]
    np.testing.assert_allclose(outputs, expected_outputs, rtol=1e-6)
    np.testing.assert_array_equal(targets, y)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), new_state, expected_state)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), grads, expected_grads)
    assert list(logs) == [PREDICTIONS]


def test_supervised_hand_computed_with_loss_arguments():
    # Dense with hand-set weights; huber with delta 2 against the numpy formula.
    w, b = np.array([[1.0], [-2.0]], np.float32), np.array([0.5], np.float32)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 1.0]], np.float32)
    y = np.array([0.0, 0.0, 0.0], np.float32)
    error = np.abs((x @ w + b)[:, 0] - y)  # 1.5, 1.5, 1.5
    expected = np.mean(np.where(error <= 2.0, 0.5 * error**2, 2.0 * (error - 1.0)))
    value, _ = run(supervised("huber", delta=2.0), train_apply(nn.Dense(1)), {"w": w, "b": b}, {}, (x, y), None)
    np.testing.assert_allclose(value, expected, **TOL)
    assert supervised("huber", delta=2.0) == supervised(losses.get_loss("huber", delta=2.0))


def test_supervised_takes_a_split_and_refuses_other_batches():
    apply, x = train_apply(nn.Dense(1)), np.ones((4, 2), np.float32)
    params, _ = numpy_init(nn.Dense(1), (2,))
    value, _ = run(supervised("mse"), apply, params, {}, Split(x, np.zeros(4, np.float32)), None)
    assert np.isfinite(value)
    with pytest.raises(ValueError, match=r"supervised: expected a batch \(x, y\), got a dict with keys \['x'\]"):
        supervised("mse")(apply, params, {}, {"x": x}, None)
    with pytest.raises(ValueError, match=r"no targets \(y is None\) — train unlabeled data with reconstruction"):
        supervised("mse")(apply, params, {}, Split(x, None), None)


# --- reconstruction -----------------------------------------------------------------------

def test_reconstruction_mse_against_numpy_for_every_batch_form():
    w = rng().normal(size=(3, 3)).astype(np.float32)
    b = rng(1).normal(size=(3,)).astype(np.float32)
    x = rng(2).normal(size=(5, 3)).astype(np.float32)
    expected = np.mean((x @ w + b - x) ** 2)  # mean over every element, not half-MSE
    apply, params = train_apply(nn.Dense(3)), {"w": w, "b": b}
    for batch in (x, (x,), (x, np.arange(5)), Split(x, None)):
        value, (_, logs) = run(reconstruction(), apply, params, {}, batch, None)
        np.testing.assert_allclose(value, expected, **TOL)
        np.testing.assert_allclose(logs["reconstruction"], expected, **TOL)
        np.testing.assert_array_equal(logs[PREDICTIONS][1], x)
    value, _ = run(reconstruction("mae"), apply, params, {}, x, None)
    np.testing.assert_allclose(value, np.mean(np.abs(x @ w + b - x)), **TOL)
    with pytest.raises(ValueError, match=r"reconstruction: expected a batch x, \(x,\) or \(x, y\), got a dict"):
        reconstruction()(apply, params, {}, {"x": x}, None)


# --- vae_elbo -----------------------------------------------------------------------------

VAE = nn.models.vae(latent=2, hidden=(6,))


def vae_setup():
    x = (1 / (1 + np.exp(-rng().normal(size=(8, 10))))).astype(np.float32)
    return (x, *numpy_init(VAE, (10,), seed=3))


def test_vae_elbo_with_weight_one_equals_todays_elbo_loss():
    likelihood = "bernoulli"  # the Gaussian is checked against numpy below
    x, params, model_state = vae_setup()
    expected, _ = jax.jit(make_loss_fn(VAE, losses.get_loss(f"elbo_{likelihood}")))(params, model_state, x, x, KEY)
    value, (_, logs) = run(vae_elbo(likelihood), train_apply(VAE), params, model_state, x, KEY)
    np.testing.assert_allclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(logs["reconstruction"] + logs["kl"], expected, rtol=1e-6)
    assert float(logs["kl_weight"]) == 1.0 and not takes_step(vae_elbo(likelihood))


def vae_terms_numpy(x, params, model_state, likelihood):
    """(R, KL) by hand in eval mode (z = mean, deterministic): the NLL and the closed-form KL."""
    (decoded, mean, log_var), _ = jax.jit(eval_apply(VAE))(params, model_state, x)
    decoded, mean, log_var = (np.asarray(a, np.float64) for a in (decoded, mean, log_var))
    if likelihood == "bernoulli":  # decoded = logits
        nll = np.sum(np.maximum(decoded, 0) - decoded * x + np.log1p(np.exp(-np.abs(decoded))), axis=1)
    else:  # unit-variance Gaussian with its constant
        nll = np.sum(0.5 * (x - decoded) ** 2 + 0.5 * np.log(2 * np.pi), axis=1)
    kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var, axis=1)
    return nll.mean(), kl.mean()


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_elbo_warmup_at_two_steps_against_numpy(likelihood):
    x, params, model_state = vae_setup()
    reconstruction_term, kl = vae_terms_numpy(x, params, model_state, likelihood)
    objective = vae_elbo(likelihood, kl_weight=0.8, warmup_steps=100)
    assert takes_step(objective)
    for step, weight in [(25, 0.2), (400, 0.8)]:
        value, (_, logs) = run(objective, eval_apply(VAE), params, model_state, x, None, step=jnp.int32(step))
        np.testing.assert_allclose(logs["kl_weight"], weight, rtol=1e-6)
        np.testing.assert_allclose(logs["reconstruction"], reconstruction_term, rtol=1e-5)
        np.testing.assert_allclose(logs["kl"], kl, rtol=1e-5)
        np.testing.assert_allclose(value, reconstruction_term + weight * kl, rtol=1e-5)


def test_vae_elbo_with_an_optax_schedule():
    x, params, model_state = vae_setup()
    schedule = optax.linear_schedule(0.0, 0.5, 10)
    objective = vae_elbo(kl_weight=schedule)
    assert takes_step(objective) and objective == vae_elbo(kl_weight=schedule)
    _, (_, logs) = jax.jit(objective, static_argnums=0)(eval_apply(VAE), params, model_state, x, None,
                                                        step=jnp.int32(5))
    np.testing.assert_allclose(logs["kl_weight"], 0.25, rtol=1e-6)
    with pytest.raises(ValueError, match=r"vae_elbo: this KL weight changes with the optimizer step, so the call "
                                         r"needs step="):
        objective(eval_apply(VAE), params, model_state, x, None)


def test_vae_elbo_errors():
    with pytest.raises(ValueError, match="vae_elbo likelihood: expected 'bernoulli' or 'gaussian', got 'poisson'"):
        vae_elbo("poisson")
    with pytest.raises(ValueError, match="vae_elbo kl_weight: expected a number >= 0 or a schedule"):
        vae_elbo(kl_weight=-1.0)
    with pytest.raises(ValueError, match="vae_elbo warmup_steps: expected an int >= 0, got -1"):
        vae_elbo(warmup_steps=-1)
    with pytest.raises(ValueError, match="give a kl_weight schedule or warmup_steps, not both"):
        vae_elbo(kl_weight=optax.constant_schedule(1.0), warmup_steps=10)
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"expected the model to output \(reconstruction, mean, log_var\), got an "
                                         r"array of shape \(2, 3\)"):
        vae_elbo()(eval_apply(nn.Identity()), {}, {}, x, None)


# --- masked_sequence_cross_entropy --------------------------------------------------------

VOCAB = 6
LM = nn.serial(nn.Embedding(VOCAB, 8), nn.Dense(VOCAB))
# Two sequences of real lengths 5 and 3, padded to 6 with id 0 (mask False).
TOKENS = np.array([[1, 4, 2, 5, 3, 0], [2, 3, 1, 0, 0, 0]], np.int32)
MASK = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], bool)


def lm_numpy(logits, tokens, mask):
    """sum of -log p(next token) over counted positions / their number."""
    log_p = np_log_softmax(np.asarray(logits, np.float64))
    targets, counted = tokens[:, 1:], mask[:, 1:]
    token_losses = -np.take_along_axis(log_p, targets[..., None], axis=-1)[..., 0]
    return token_losses[counted].sum() / counted.sum(), counted.sum()


def test_masked_lm_is_the_mean_over_real_tokens():
    params, model_state = numpy_init(LM, (TOKENS.shape[1] - 1,), seed=4)
    apply = eval_apply(LM)
    logits, _ = jax.jit(apply)(params, model_state, TOKENS[:, :-1])
    expected, count = lm_numpy(logits, TOKENS, MASK)
    assert count == 4 + 2
    for mask in (MASK, MASK.astype(np.float32)):
        value, (_, logs) = run(masked_sequence_cross_entropy(), apply, params, model_state,
                               {"tokens": TOKENS, "mask": mask}, None)
        np.testing.assert_allclose(value, expected, **TOL)
        np.testing.assert_allclose(logs["bits_per_token"], expected / math.log(2), **TOL)
        assert float(logs["tokens"]) == 6.0
    # Not the mean over positions: every one of the 10 positions counted gives another value.
    value, (_, logs) = run(masked_sequence_cross_entropy(), apply, params, model_state, {"tokens": TOKENS}, None)
    np.testing.assert_allclose(value, lm_numpy(logits, TOKENS, np.ones_like(MASK))[0], **TOL)
    assert float(logs["tokens"]) == 10.0 and not np.isclose(value, expected)


def test_masked_lm_with_nan_logits_and_junk_ids_in_padding_stays_finite():
    # logits = table[token] at real positions, NaN at padded ones; padded ids out of range.
    padded = ~MASK[:, 1:]
    tokens = np.where(MASK, TOKENS, 99)

    def apply(params, model_state, x, *, key=None):
        logits = params["table"][jnp.clip(x, 0, VOCAB - 1)]
        return jnp.where(padded[..., None], jnp.nan, logits), model_state

    table = jnp.asarray(rng().normal(size=(VOCAB, VOCAB)), jnp.float32)
    objective = masked_sequence_cross_entropy(tokens="ids", mask="real")
    (value, (_, logs)), grads = jax.jit(jax.value_and_grad(objective, argnums=1, has_aux=True), static_argnums=0)(
        apply, {"table": table}, {}, {"ids": tokens, "real": MASK}, None)
    expected, _ = lm_numpy(np.asarray(table)[np.clip(TOKENS[:, :-1], 0, VOCAB - 1)], TOKENS, MASK)
    np.testing.assert_allclose(value, expected, **TOL)
    assert np.all(np.isfinite(grads["table"])) and np.isfinite(logs["bits_per_token"])


def test_masked_lm_errors():
    apply, objective = eval_apply(LM), masked_sequence_cross_entropy()
    params, model_state = numpy_init(LM, (5,))
    with pytest.raises(ValueError, match=r"expected a dict batch with key 'tokens', got a dict with keys "
                                         r"\['mask', 'token'\] — did you mean 'token'\?"):
        objective(apply, params, model_state, {"token": TOKENS, "mask": MASK}, None)
    with pytest.raises(ValueError, match=r"expected 'tokens' \(batch, length >= 2\) int token ids, got shape "
                                         r"\(2, 6\) dtype float32"):
        objective(apply, params, model_state, {"tokens": TOKENS.astype(np.float32)}, None)

    def flat(params, model_state, x, *, key=None):
        return jnp.zeros((x.shape[0], VOCAB)), model_state

    with pytest.raises(ValueError, match=r"expected logits \(2, 5, vocab\) for tokens\[:, :-1\], got shape \(2, 6\)"):
        objective(flat, {}, {}, {"tokens": TOKENS}, None)
    with pytest.raises(ValueError, match="masked_sequence_cross_entropy mask: expected the batch key"):
        masked_sequence_cross_entropy(mask=1)


# --- with_weight_decay --------------------------------------------------------------------

REGRESSOR = nn.serial(nn.Dense(4), nn.LayerNorm(), nn.Dense(2))


def test_weight_decay_term_is_half_wd_times_squared_weights():
    params, model_state = numpy_init(REGRESSOR, (3,), seed=5)
    x = rng().normal(size=(6, 3)).astype(np.float32)
    y = rng(1).normal(size=(6, 2)).astype(np.float32)
    squared_weights = sum(np.sum(np.asarray(params[name]["w"]) ** 2) for name in ("dense_0", "dense_2"))
    objective = with_weight_decay(supervised("mse"), 0.3)
    inner, _ = run(supervised("mse"), eval_apply(REGRESSOR), params, model_state, (x, y), None)
    value, (_, logs) = run(objective, eval_apply(REGRESSOR), params, model_state, (x, y), None)
    np.testing.assert_allclose(logs["weight_decay"], 0.5 * 0.3 * squared_weights, **TOL)  # biases, scales out
    np.testing.assert_allclose(value, inner + 0.5 * 0.3 * squared_weights, **TOL)
    assert PREDICTIONS in logs
    # Its gradient is wd * w on weights, nothing on biases or LayerNorm's scale.
    grads = jax.jit(jax.grad(objective.penalty))(params)
    np.testing.assert_allclose(grads["dense_0"]["w"], 0.3 * params["dense_0"]["w"], **TOL)
    assert not np.any(grads["dense_0"]["b"]) and not np.any(grads["layer_norm_1"]["scale"])


def test_weight_decay_include_by_path_and_errors():
    params = {"encoder": {"w": jnp.ones((2, 2)), "b": jnp.full((3,), 2.0)}}
    only_biases = with_weight_decay(supervised(), 1.0, include=lambda path, leaf: path[-1] == "b")
    np.testing.assert_allclose(only_biases.penalty(params), 0.5 * 3 * 4.0, **TOL)
    with pytest.raises(ValueError, match="with_weight_decay weight_decay: expected a number >= 0, got -0.1"):
        with_weight_decay(supervised(), -0.1)
    with pytest.raises(ValueError, match="with_weight_decay: the wrapped objective already logs 'weight_decay'"):
        twice = with_weight_decay(with_weight_decay(reconstruction(), 0.1), 0.1)
        twice(eval_apply(nn.Identity()), params, {}, np.ones((2, 3), np.float32), None)


# --- with_auxiliary -----------------------------------------------------------------------

def ActivityPenalty():
    """Reports mean(x ** 2) over the batch as its state entry "aux_loss"."""

    def init(key, input_shape):
        return input_shape, {}, {"aux_loss": jnp.zeros(())}

    def apply(params, state, x, *, key=None, train=False):
        return x, {"aux_loss": jax.lax.pmean(jnp.mean(x**2), "batch")}

    return nn.Layer(init, apply, "ActivityPenalty")


def test_auxiliary_term_is_read_from_the_new_model_state():
    net = nn.serial(nn.Dense(3), nn.named("first", ActivityPenalty()), nn.Dense(2),
                    nn.named("second", ActivityPenalty()))
    params, model_state = numpy_init(net, (4,), seed=7)
    x = rng().normal(size=(5, 4)).astype(np.float32)
    y = rng(1).normal(size=(5, 2)).astype(np.float32)
    hidden = np.asarray(x @ params["dense_0"]["w"] + params["dense_0"]["b"])
    outputs = hidden @ np.asarray(params["dense_2"]["w"]) + np.asarray(params["dense_2"]["b"])
    expected_term = 0.01 * (np.mean(hidden**2) + np.mean(outputs**2))  # both layers' entries, summed
    objective = with_auxiliary(supervised("mse"), "aux_loss", weight=0.01, name="activity")
    inner, _ = run(supervised("mse"), train_apply(net), params, model_state, (x, y), None)
    value, (new_state, logs) = run(objective, train_apply(net), params, model_state, (x, y), None)
    np.testing.assert_allclose(logs["activity"], expected_term, **TOL)
    np.testing.assert_allclose(value, inner + expected_term, **TOL)
    np.testing.assert_allclose(new_state["first"]["aux_loss"], np.mean(hidden**2), **TOL)
    # A function of the state selects one entry; the gradient flows through the term.
    first_only = with_auxiliary(supervised("mse"), lambda state: state["first"]["aux_loss"], weight=2.0)
    _, (_, logs) = run(first_only, train_apply(net), params, model_state, (x, y), None)
    np.testing.assert_allclose(logs["auxiliary"], 2.0 * np.mean(hidden**2), **TOL)
    term_grads = jax.jit(jax.grad(lambda p: first_only(train_apply(net), p, model_state, (x, y), None)[0] -
                          supervised("mse")(train_apply(net), p, model_state, (x, y), None)[0]))(params)
    assert np.any(term_grads["dense_0"]["w"])


def test_auxiliary_errors():
    net = nn.serial(nn.Dense(2), ActivityPenalty())
    params, model_state = numpy_init(net, (3,))
    batch = (np.ones((2, 3), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match=r"the model state has no entry named 'balance' \(it has: "
                                         r"activity_penalty_1/aux_loss\) — a layer must return it"):
        with_auxiliary(supervised("mse"), "balance")(train_apply(net), params, model_state, batch, None)

    def vector(params, model_state, x, *, key=None):
        return x[:, :2], {"aux_loss": jnp.ones(3)}

    with pytest.raises(ValueError, match=r"entry aux_loss has shape \(3,\), expected a \(\) scalar — reduce it"):
        with_auxiliary(supervised("mse"), "aux_loss")(vector, {}, {}, batch, None)
    with pytest.raises(ValueError, match="with_auxiliary name: 'loss' is reserved"):
        with_auxiliary(supervised(), "aux_loss", name="loss")
    with pytest.raises(ValueError, match="with_auxiliary: the wrapped objective already logs 'auxiliary'"):
        twice = with_auxiliary(with_auxiliary(supervised("mse"), "aux_loss"), "aux_loss")
        twice(train_apply(net), params, model_state, batch, None)


# --- info_nce -----------------------------------------------------------------------------

def nt_xent_numpy(z_1, z_2, temperature):
    """SimCLR eq. (1), one row at a time: l(i, j) = -log exp(s_ij) / sum_{k != i} exp(s_ik)."""
    z = np.concatenate([z_1, z_2]).astype(np.float64)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n2, n = len(z), len(z_1)
    losses_, hits = [], []
    for i in range(n2):
        positive = (i + n) % n2
        similarities = np.array([z[i] @ z[k] / temperature for k in range(n2)])
        others = [k for k in range(n2) if k != i]
        losses_.append(-similarities[positive] + np.log(np.sum(np.exp(similarities[others]))))
        hits.append(max(others, key=lambda k: similarities[k]) == positive)
    return np.mean(losses_), np.mean(hits)


def test_info_nce_matches_numpy():
    encoder = nn.Dense(4)
    params, _ = numpy_init(encoder, (5,), seed=8)
    view_1 = rng().normal(size=(6, 5)).astype(np.float32)
    view_2 = (view_1 + 0.5 * rng(1).normal(size=(6, 5))).astype(np.float32)
    value, (_, logs) = run(info_nce(0.5), train_apply(encoder), params, {}, (view_1, view_2), None)
    z_1 = view_1 @ np.asarray(params["w"]) + np.asarray(params["b"])
    z_2 = view_2 @ np.asarray(params["w"]) + np.asarray(params["b"])
    expected, accuracy = nt_xent_numpy(z_1, z_2, 0.5)
    np.testing.assert_allclose(value, expected, **TOL)
    np.testing.assert_allclose(logs["contrastive_accuracy"], accuracy)
    assert 0 < accuracy < 1  # the case is not trivial


def test_info_nce_loss_gradients():
    z_1, z_2 = (jnp.asarray(rng(seed).normal(size=(4, 3)), jnp.float32) for seed in (9, 10))
    check_grads(jax.jit(lambda a, b: info_nce_loss(a, b, 0.5)[0]), (z_1, z_2), order=1, modes=["rev"], eps=1e-2)
    grads = jax.jit(jax.grad(lambda a: info_nce_loss(a, z_2, 0.5)[0]))(jnp.zeros((4, 3)))  # z = 0: finite
    assert np.all(np.isfinite(grads))


def test_info_nce_draws_two_views_with_augment():
    def jitter(key, x):
        return x + 0.1 * jax.random.normal(key, x.shape)

    @jax.jit
    def expected_views(key):  # two draws with the keys objective_key(key) splits into
        return [jax.vmap(jitter)(jax.random.split(view_key, 6), x) for view_key in
                jax.random.split(objective_key(key), 2)]

    x = rng().normal(size=(6, 5)).astype(np.float32)
    value, (_, logs) = run(info_nce(0.2, augment=jitter), train_apply(nn.Identity()), {}, {}, (x, None), KEY)
    views = expected_views(KEY)
    expected, accuracy = nt_xent_numpy(*views, 0.2)
    np.testing.assert_allclose(value, expected, **TOL)
    assert not np.allclose(views[0], views[1]) and float(logs["contrastive_accuracy"]) == accuracy


def test_info_nce_errors():
    apply = train_apply(nn.Identity())
    with pytest.raises(ValueError, match=r"info_nce: expected a batch \(view_1, view_2\), got an array of shape "
                                         r"\(4, 3\) — pass two augmented views"):
        info_nce()(apply, {}, {}, np.ones((4, 3), np.float32), None)
    with pytest.raises(ValueError, match=r"the two views must have one shape, got \(4, 3\) and \(5, 3\)"):
        info_nce()(apply, {}, {}, (np.ones((4, 3)), np.ones((5, 3))), None)
    with pytest.raises(ValueError, match=r"expected \(batch, features\) embeddings, got shape \(8, 3, 2\)"):
        info_nce()(apply, {}, {}, (np.ones((4, 3, 2)), np.ones((4, 3, 2))), None)
    with pytest.raises(ValueError, match="info_nce temperature: expected a number > 0, got 0"):
        info_nce(0)


# --- the contract: step, equality, jit, vmap ----------------------------------------------

def test_takes_step_reads_the_signature():
    def plain(apply, params, model_state, batch, key):
        return 0.0, (model_state, {})

    def stepped(apply, params, model_state, batch, key, *, step):
        return 0.0, (model_state, {})

    class Stepped:
        def __call__(self, apply, params, model_state, batch, key, *, step):
            return 0.0, (model_state, {})

    def swallowing(apply, params, model_state, batch, key, **kwargs):
        return 0.0, (model_state, {})

    assert takes_step(stepped) and takes_step(functools.partial(stepped, key=None)) and takes_step(Stepped())
    assert not takes_step(plain) and not takes_step(swallowing) and not takes_step(max)
    warm = vae_elbo(warmup_steps=10)
    assert takes_step(with_weight_decay(warm, 0.1)) and takes_step(with_auxiliary(warm, "aux_loss"))
    assert not takes_step(with_weight_decay(supervised(), 0.1))
    assert takes_step(functools.partial(with_weight_decay(warm, 0.1), batch=None))


def test_wrappers_pass_step_to_the_objective_that_takes_it():
    x, params, model_state = vae_setup()
    objective = with_weight_decay(vae_elbo(kl_weight=1.0, warmup_steps=10), 0.0)
    _, (_, logs) = run(objective, eval_apply(VAE), params, model_state, x, None, step=jnp.int32(5))
    np.testing.assert_allclose(logs["kl_weight"], 0.5, rtol=1e-6)


BUILDERS = [
    lambda: supervised("cross_entropy", label_smoothing=0.1),
    lambda: reconstruction("huber", delta=2.0),
    lambda: vae_elbo("gaussian", kl_weight=0.5, warmup_steps=3),
    lambda: masked_sequence_cross_entropy(tokens="ids"),
    lambda: info_nce(0.2),
    lambda: with_weight_decay(supervised("mse"), 1e-4),
    lambda: with_auxiliary(supervised("mse"), "aux_loss", weight=0.1, name="balance"),
]


@pytest.mark.parametrize("build", BUILDERS, ids=lambda build: type(build()).__name__)
def test_objectives_built_alike_are_equal_and_hash_equal(build):
    assert build() == build() and hash(build()) == hash(build())
    rebuilt = dataclasses.replace(build())
    assert rebuilt == build() and takes_step(rebuilt) == takes_step(build())


MLP = nn.serial(nn.Dense(4), nn.Relu(), nn.Dense(3))


def test_equal_objectives_share_one_compiled_program(compiles):
    x = rng().normal(size=(8, 5)).astype(np.float32)
    y = rng(1).integers(0, 3, 8).astype(np.int32)
    (params, model_state), (other_params, _) = numpy_init(MLP, (5,)), numpy_init(MLP, (5,), seed=1)

    @functools.partial(jax.jit, static_argnums=0)
    def loss(objective, params):
        return objective(eval_apply(MLP), params, model_state, (x, y), None)[0]

    first = loss(supervised("cross_entropy"), params)
    with compiles.counting() as compiled:
        second = loss(supervised("cross_entropy"), other_params)  # a new, equal objective
    assert len(compiled) == 0 and np.isfinite(first) and not np.isclose(first, second)


def test_a_population_vmaps_an_objective():
    x = rng().normal(size=(8, 5)).astype(np.float32)
    y = rng(1).integers(0, 3, 8).astype(np.int32)
    members = [numpy_init(MLP, (5,), seed=seed)[0] for seed in (0, 1)]
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *members)
    model_state = numpy_init(MLP, (5,))[1]
    objective = with_weight_decay(supervised("cross_entropy"), 1e-2)

    def member_loss(params):
        return objective(eval_apply(MLP), params, model_state, (x, y), None)[0]

    values = jax.jit(jax.vmap(member_loss))(stacked)
    single = jax.jit(member_loss)
    np.testing.assert_allclose(values, [single(params) for params in members], rtol=1e-5)


def test_model_key_is_the_dropout_stream_of_todays_step():
    from fdl.train.step import example_keys

    np.testing.assert_array_equal(jax.random.key_data(jax.random.split(model_key(KEY), 4)),
                                  jax.random.key_data(example_keys(KEY, 4)[1]))
    assert model_key(None) is None and objective_key(None) is None


# --- by name ------------------------------------------------------------------------------

def test_get_objective_builds_every_name():
    assert set(OBJECTIVES) == {"supervised", "reconstruction", "vae_elbo", "masked_sequence_cross_entropy",
                               "info_nce"}
    assert get_objective("supervised", loss="huber", delta=2.0) == supervised("huber", delta=2.0)
    assert get_objective("reconstruction") == reconstruction()
    assert get_objective("vae_elbo", likelihood="gaussian", warmup_steps=5) == vae_elbo("gaussian", warmup_steps=5)
    assert get_objective("masked_sequence_cross_entropy", mask="m") == masked_sequence_cross_entropy(mask="m")
    assert get_objective("info_nce", temperature=0.5) == info_nce(0.5)
    assert objective_arguments("info_nce") == {"temperature": 0.1, "augment": None}
    objective = info_nce()
    assert get_objective(objective) is objective


def test_get_objective_errors():
    with pytest.raises(ValueError, match="unknown objective 'supervize' — did you mean 'supervised'?"):
        get_objective("supervize")
    with pytest.raises(ValueError, match="objective vae_elbo takes no argument 'kl_wieght' — did you mean "
                                         "'kl_weight'"):
        get_objective("vae_elbo", kl_wieght=0.5)
    with pytest.raises(ValueError, match="objective info_nce takes no argument 'tau' — valid: temperature, augment"):
        get_objective("info_nce", tau=0.5)
    with pytest.raises(ValueError, match="supervised: loss cross_entropy takes no argument 'los' — did you "
                                         "mean 'loss'"):
        get_objective("supervised", los="mse")
    with pytest.raises(ValueError, match="supervised: loss huber takes no argument 'deltta' — did you mean "
                                         "'delta'"):
        get_objective("supervised", loss="huber", deltta=2.0)
    with pytest.raises(ValueError, match="unknown loss 'msee' — did you mean 'mse'?"):
        get_objective("reconstruction", loss="msee")
    with pytest.raises(ValueError, match="huber delta: expected a number > 0, got -1"):
        get_objective("supervised", loss="huber", delta=-1)
    with pytest.raises(ValueError, match="info_nce temperature: expected a number > 0"):
        get_objective("info_nce", temperature=-1.0)
    with pytest.raises(ValueError, match="get_objective: arguments temperature are for an objective given by name"):
        get_objective(info_nce(), temperature=0.5)
