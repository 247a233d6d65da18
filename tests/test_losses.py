"""fdl.losses against numpy hand computations and closed forms."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from fdl import losses

# float32 losses of O(1) values: 1e-6 relative is a few ulps of accumulated rounding.
TOL = dict(rtol=1e-5, atol=1e-6)


def np_log_softmax(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def test_cross_entropy_integer_label_matches_numpy():
    logits = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    assert np.allclose(losses.cross_entropy(logits, 2), -np_log_softmax(logits)[2], **TOL)


def test_cross_entropy_integer_and_one_hot_agree():
    logits = jax.random.normal(jax.random.key(0), (5,))
    one_hot = jax.nn.one_hot(3, 5)
    assert np.allclose(losses.cross_entropy(logits, 3), losses.cross_entropy(logits, one_hot), **TOL)


def test_cross_entropy_probability_target_matches_numpy():
    logits = np.array([0.2, 1.0, -1.0], np.float32)
    target = np.array([0.2, 0.5, 0.3], np.float32)
    expected = -(target * np_log_softmax(logits)).sum()
    assert np.allclose(losses.cross_entropy(logits, target), expected, **TOL)


@pytest.mark.parametrize("label", [1, jax.nn.one_hot(1, 3)])
def test_cross_entropy_stable_for_huge_logits(label):
    logits = jnp.array([1e4, 0.0, -1e4])
    value = losses.cross_entropy(logits, label)
    assert np.isfinite(value) and np.allclose(value, 1e4)
    assert np.all(np.isfinite(jax.grad(losses.cross_entropy)(logits, label)))


@pytest.mark.parametrize("label", [2, jax.nn.one_hot(2, 4)])
def test_label_smoothing_closed_form(label):
    alpha, logits = 0.1, np.array([0.5, -1.0, 2.0, 0.0], np.float32)
    target = (1 - alpha) * np.eye(4)[2] + alpha / 4
    expected = -(target * np_log_softmax(logits)).sum()
    loss = losses.get_loss("cross_entropy", label_smoothing=alpha)
    assert np.allclose(loss(logits, label), expected, **TOL)


def test_cross_entropy_errors():
    with pytest.raises(ValueError, match="must be an int, got dtype float32"):
        losses.cross_entropy(jnp.zeros(3), jnp.float32(1.0))
    with pytest.raises(ValueError, match=r"one-hot vector of shape \(3,\), got label shape \(4,\)"):
        losses.cross_entropy(jnp.zeros(3), jnp.zeros(4))


@pytest.mark.parametrize("logit_shape", [(), (1,)])
def test_binary_cross_entropy_matches_numpy(logit_shape):
    for logit, label in [(0.7, 1.0), (-2.0, 0.0), (1e4, 0.0), (-1e4, 0.0)]:
        # -[y log s(z) + (1 - y) log(1 - s(z))] in its overflow-free form.
        expected = max(logit, 0.0) - logit * label + np.log1p(np.exp(-abs(logit)))
        value = losses.binary_cross_entropy(jnp.full(logit_shape, logit), label)
        assert value.shape == () and np.allclose(value, expected, rtol=1e-5), (logit, label)


def test_regression_losses_match_numpy():
    output = np.array([1.0, 2.0, -3.0], np.float32)
    target = np.array([0.5, 2.0, 1.0], np.float32)
    error = output - target
    assert np.allclose(losses.mse(output, target), np.mean(error**2), **TOL)  # not half-MSE
    assert np.allclose(losses.mae(output, target), np.mean(np.abs(error)), **TOL)


def test_mse_accepts_scalar_target_for_one_output_and_rejects_mismatch():
    assert np.allclose(losses.mse(jnp.array([3.0]), 1.0), 4.0)
    with pytest.raises(ValueError, match=r"mse: expected a target with 1 value\(s\).*got target shape \(3,\)"):
        losses.mse(jnp.array([3.0]), jnp.zeros(3))


def test_huber_against_hand_values():
    # errors 0.5 (quadratic: 0.5 * 0.25) and 3 with delta 2 (linear: 2 * (3 - 1)).
    value = losses.huber(jnp.array([0.5, 3.0]), jnp.zeros(2), delta=2.0)
    assert np.allclose(value, (0.125 + 4.0) / 2, **TOL)
    # PyTorch SmoothL1(beta=2) of error 3 is 3 - 1 = 2: Huber(delta=2) / 2.
    assert np.allclose(losses.huber(jnp.array([3.0]), 0.0, delta=2.0) / 2.0, 2.0, **TOL)


def test_gaussian_kl_closed_form_and_monte_carlo():
    mean, log_var = np.array([0.5, -1.0], np.float32), np.array([0.2, -0.7], np.float32)
    var = np.exp(log_var)
    closed = 0.5 * np.sum(var + mean**2 - 1 - log_var)
    assert np.allclose(losses.gaussian_kl(mean, log_var), closed, **TOL)
    assert np.allclose(losses.gaussian_kl(np.zeros(3), np.zeros(3)), 0.0)
    # Monte Carlo E_q[log q(z) - log p(z)] with 200k samples: std error ~ 3e-3.
    z = np.random.default_rng(0).normal(mean, np.sqrt(var), size=(200_000, 2))
    log_q = -0.5 * ((z - mean) ** 2 / var + log_var + np.log(2 * np.pi))
    log_p = -0.5 * (z**2 + np.log(2 * np.pi))
    assert abs((log_q - log_p).sum(axis=1).mean() - closed) < 0.02


def test_reparameterize_moments_and_gradient():
    mean, log_var = jnp.array([1.0, -2.0]), jnp.log(jnp.array([0.25, 4.0]))
    keys = jax.random.split(jax.random.key(1), 20_000)
    samples = jax.vmap(losses.reparameterize, (0, None, None))(keys, mean, log_var)
    assert np.allclose(samples.mean(0), mean, atol=0.05)
    assert np.allclose(samples.var(0), jnp.exp(log_var), rtol=0.05)
    gradient = jax.grad(lambda m: losses.reparameterize(keys[0], m, log_var).sum())(mean)
    assert np.allclose(gradient, 1.0)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_elbo_loss_matches_numpy(likelihood):
    reconstruction = np.array([0.3, -1.2, 2.0], np.float32)
    x = np.array([1.0, 0.0, 1.0], np.float32)
    mean, log_var = np.array([0.1], np.float32), np.array([-0.5], np.float32)
    kl = 0.5 * np.sum(np.exp(log_var) + mean**2 - 1 - log_var)
    if likelihood == "bernoulli":
        p = 1 / (1 + np.exp(-reconstruction))
        nll = -np.sum(x * np.log(p) + (1 - x) * np.log(1 - p))
    else:
        nll = np.sum(0.5 * (x - reconstruction) ** 2 + 0.5 * np.log(2 * np.pi))
    value = losses.elbo_loss(reconstruction, x, mean, log_var, likelihood=likelihood)
    assert np.allclose(value, nll + kl, **TOL)
    preset = losses.get_loss(f"elbo_{likelihood}")((reconstruction, mean, log_var), x)
    by_argument = losses.get_loss("elbo", likelihood=likelihood)((reconstruction, mean, log_var), x)
    assert np.allclose(preset, value) and np.allclose(by_argument, value)


def test_elbo_errors():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        losses.elbo_loss(jnp.zeros(2), jnp.zeros(2), jnp.zeros(1), jnp.zeros(1), likelihood="poisson")


def test_gradients_match_finite_differences():
    logits = jax.random.normal(jax.random.key(2), (4,))
    smoothed = jax.jit(lambda z: losses.cross_entropy(z, 1, label_smoothing=0.1))
    check_grads(smoothed, (logits,), order=1, modes=["rev"], eps=1e-2)
    huber = jax.jit(lambda z: losses.huber(z, jnp.array([0.3, 5.0, -2.0, 0.1])))
    check_grads(huber, (logits,), order=1, modes=["rev"], eps=1e-2)
    check_grads(jax.jit(losses.gaussian_kl), (logits[:2], logits[2:]), order=2, modes=["rev"], eps=1e-2)


def test_get_loss():
    loss = losses.get_loss("mse")
    assert loss == losses.NamedLoss("mse") and loss.name == "mse" and loss.args == ()
    custom = lambda output, target: jnp.sum(output - target)
    assert losses.get_loss(custom) is custom
    named = losses.get_loss("huber", delta=2.0)
    assert losses.get_loss(named) is named  # a NamedLoss is a callable: it passes through
    with pytest.raises(ValueError, match="unknown loss 'cros_entropy' — did you mean 'cross_entropy'\\? valid: .*huber"):
        losses.get_loss("cros_entropy")
    with pytest.raises(ValueError, match="unknown loss 'zzz' — valid: .*elbo_bernoulli"):
        losses.get_loss("zzz")


# The same numbers as the function called with the keyword arguments.
CALLS = [
    ("cross_entropy", {"label_smoothing": 0.2}, jnp.array([0.5, -1.0, 2.0]), 1,
     lambda o, t: losses.cross_entropy(o, t, label_smoothing=0.2)),
    ("huber", {"delta": 0.5}, jnp.array([0.2, 3.0]), jnp.zeros(2),
     lambda o, t: losses.huber(o, t, delta=0.5)),
    ("mse", {}, jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]), losses.mse),
    ("elbo", {"likelihood": "gaussian"}, (jnp.array([0.3, -1.0]), jnp.array([0.1]), jnp.array([-0.5])),
     jnp.array([1.0, 0.0]), lambda o, t: losses.elbo_loss(o[0], t, o[1], o[2], likelihood="gaussian")),
    ("elbo_bernoulli", {}, (jnp.array([0.3, -1.0]), jnp.array([0.1]), jnp.array([-0.5])),
     jnp.array([1.0, 0.0]), lambda o, t: losses.elbo_loss(o[0], t, o[1], o[2], likelihood="bernoulli")),
    ("kl_divergence", {"from_logits": True}, jnp.array([0.5, -1.0, 2.0]), jnp.array([0.2, 0.3, 0.5]),
     lambda o, t: losses.kl_divergence(o, t, from_logits=True)),
    ("cosine_embedding", {"margin": 0.25}, jnp.array([[1.0, 2.0], [2.0, 1.0]]), -1,
     lambda o, t: losses.cosine_embedding(o, t, margin=0.25)),
    ("triplet_margin", {"margin": 2.0, "p": 1.0, "swap": True},
     jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]]), 0.0,
     lambda o, t: losses.triplet_margin(o, t, margin=2.0, p=1.0, swap=True)),
]


@pytest.mark.parametrize("name,args,output,target,reference", CALLS, ids=[c[0] for c in CALLS])
def test_named_loss_equals_the_function_with_its_arguments(name, args, output, target, reference):
    loss = losses.get_loss(name, **args)
    np.testing.assert_allclose(loss(output, target), reference(output, target), **TOL)
    np.testing.assert_allclose(jax.jit(loss)(output, target), reference(output, target), **TOL)


@pytest.mark.parametrize("first,second", [
    (("huber", {"delta": 2}), ("huber", {"delta": 2.0})),
    (("cross_entropy", {}), ("cross_entropy", {"label_smoothing": 0.0})),  # defaults filled in
    (("elbo", {"likelihood": "gaussian"}), ("elbo", {"likelihood": "gaussian"})),
])
def test_equal_names_and_arguments_give_equal_hashable_losses(first, second):
    a, b = losses.get_loss(first[0], **first[1]), losses.get_loss(second[0], **second[1])
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1


@pytest.mark.parametrize("first,second", [
    (("huber", {"delta": 2.0}), ("huber", {"delta": 3.0})),
    (("mse", {}), ("mae", {})),
    (("elbo_bernoulli", {}), ("elbo_gaussian", {})),
])
def test_different_losses_differ(first, second):
    assert losses.get_loss(first[0], **first[1]) != losses.get_loss(second[0], **second[1])


def test_equal_losses_share_one_compiled_program():
    traces = []

    @functools.partial(jax.jit, static_argnums=0)
    def total(loss, output, target):
        traces.append(loss)
        return loss(output, target)

    output, target = jnp.array([0.2, 3.0]), jnp.zeros(2)
    total(losses.get_loss("huber", delta=2.0), output, target)
    total(losses.get_loss("huber", delta=2), output, target)  # built anew, equal: no new trace
    assert len(traces) == 1
    total(losses.get_loss("huber", delta=3.0), output, target)
    assert len(traces) == 2


def test_loss_arguments_and_kwargs():
    assert losses.loss_arguments("cross_entropy") == {"label_smoothing": 0.0}
    assert losses.loss_arguments("kl_divergence") == {"from_logits": False}
    assert losses.loss_arguments("cosine_embedding") == {"margin": 0.0}  # PyTorch's defaults
    assert losses.loss_arguments("triplet_margin") == {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": False}
    assert losses.loss_arguments("elbo") == {"likelihood": "bernoulli"}
    assert losses.loss_arguments("elbo_gaussian") == {}  # the preset fixes likelihood
    assert losses.get_loss("elbo_gaussian").kwargs == {"likelihood": "gaussian"}
    assert losses.get_loss("huber").args == (("delta", 1.0),)
    assert losses.LOSSES["elbo_gaussian"] == losses.get_loss("elbo_gaussian")  # every name is in LOSSES
    assert losses.cross_entropy_with(label_smoothing=0.1) == losses.get_loss("cross_entropy", label_smoothing=0.1)


@pytest.mark.parametrize("name,args,message", [
    ("mse", {"label_smoothing": 0.1}, r"^mse takes no argument 'label_smoothing' — valid: \(none\)$"),
    ("huber", {"deltta": 2.0}, r"^huber takes no argument 'deltta' — did you mean 'delta'\?$"),
    ("cross_entropy", {"zzz": 1}, r"^cross_entropy takes no argument 'zzz' — valid: label_smoothing$"),
    ("elbo_bernoulli", {"likelihood": "gaussian"},
     r"^elbo_bernoulli fixes likelihood='bernoulli' — use loss elbo with likelihood instead$"),
    ("cross_entropy", {"label_smoothing": 1.0},
     r"^cross_entropy label_smoothing: expected a number in \[0, 1\), got 1\.0$"),
    ("cross_entropy", {"label_smoothing": "0.1"}, r"label_smoothing: expected a number in \[0, 1\), got '0\.1'"),
    ("huber", {"delta": 0.0}, r"^huber delta: expected a number > 0, got 0\.0$"),
    ("huber", {"delta": True}, r"^huber delta: expected a number > 0, got True$"),
    ("elbo", {"likelihood": "poisson"}, r"^elbo likelihood: expected 'bernoulli' or 'gaussian', got 'poisson'$"),
    ("zzz", {}, r"^unknown loss 'zzz' — valid: binary_cross_entropy, cosine_embedding, cross_entropy, "
                r"elbo, elbo_bernoulli"),
    ("kl_divergence", {"from_logits": "yes"}, r"^kl_divergence from_logits: expected True or False, got 'yes'$"),
    ("kl_divergence", {"log_target": True}, r"^kl_divergence takes no argument 'log_target' — valid: from_logits$"),
    ("cosine_embedding", {"margin": 1.5}, r"^cosine_embedding margin: expected a number in \[-1, 1\], got 1\.5$"),
    ("triplet_margin", {"margin": 0.0}, r"^triplet_margin margin: expected a number > 0, got 0\.0$"),
    ("triplet_margin", {"p": "2"}, r"^triplet_margin p: expected a number > 0 \(inf allowed\), got '2'$"),
    ("triplet_margin", {"eps": -1e-6}, r"^triplet_margin eps: expected a number >= 0, got -1e-06$"),
    ("triplet_margin", {"swap": 1}, r"^triplet_margin swap: expected True or False, got 1$"),
    ("triplet_margin", {"margn": 2.0}, r"^triplet_margin takes no argument 'margn' — did you mean 'margin'\?$"),
])
def test_bad_loss_arguments_are_one_line_errors(name, args, message):
    with pytest.raises(ValueError, match=message):
        losses.get_loss(name, **args)
    with pytest.raises(ValueError, match=message):  # the dataclass checks however it is built
        losses.NamedLoss(name, tuple(args.items()))


def test_unhashable_argument_and_arguments_for_a_callable_are_refused(monkeypatch):
    # No registered loss takes a list or dict; a stand-in does, to reach the hashability check.
    monkeypatch.setitem(losses.LOSSES, "weighted", lambda o, t, *, weights=(): jnp.sum(o - t))
    assert losses.get_loss("weighted", weights=[1, [2, 3]]).args == (("weights", (1, (2, 3))),)
    with pytest.raises(ValueError, match=r"^weighted weights: expected a hashable value .*got dict$"):
        losses.get_loss("weighted", weights={"a": 1})
    with pytest.raises(ValueError, match=r"^get_loss: arguments delta are for a loss given by name"):
        losses.get_loss(losses.huber, delta=2.0)


# ---------------------------------------------------------------- KL, cosine embedding, triplet
# The PyTorch formulas, written in float64 numpy for a batch (the first axis), with their reduction.

def torch_kl_div_batchmean(log_probs, target):
    """torch.nn.functional.kl_div(log_probs, target, reduction="batchmean")."""
    target_log_target = np.where(target > 0, target * np.log(np.where(target > 0, target, 1.0)), 0.0)
    pointwise = target_log_target - target * log_probs  # torch.xlogy(target, target) - target * input
    return pointwise.sum() / log_probs.shape[0]


def torch_cosine_embedding_mean(x1, x2, target, margin):
    """torch.nn.functional.cosine_embedding_loss (ATen: 1e-12 on each squared norm), reduction="mean"."""
    cos = (x1 * x2).sum(1) / np.sqrt(((x1 * x1).sum(1) + 1e-12) * ((x2 * x2).sum(1) + 1e-12))
    loss = np.where(target == 1, 1 - cos, 0.0) + np.where(target == -1, np.maximum(cos - margin, 0.0), 0.0)
    return loss.mean()


def torch_triplet_margin_mean(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False):
    """torch.nn.functional.triplet_margin_loss: pairwise_distance(x, y) = ||x - y + eps||_p, mean."""
    distance = lambda x, y: (np.abs(x - y + eps) ** p).sum(1) ** (1 / p)
    negative_distance = distance(anchor, negative)
    if swap:
        negative_distance = np.minimum(negative_distance, distance(positive, negative))
    return np.maximum(distance(anchor, positive) - negative_distance + margin, 0.0).mean()


def batch_mean(loss, outputs, targets):
    """The engine's reduction: the mean over the batch of the per-example loss."""
    return float(jnp.mean(jax.vmap(loss)(outputs, targets)))


def test_kl_divergence_by_hand():
    # target (1/2, 1/2) against prediction (1/4, 3/4): 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3).
    value = losses.kl_divergence(jnp.log(jnp.array([0.25, 0.75])), jnp.array([0.5, 0.5]))
    assert np.allclose(value, 0.5 * np.log(4 / 3), **TOL)
    # A zero target probability contributes 0 (0 log 0 = 0): target (1, 0) vs (1/2, 1/2) is ln 2.
    value = losses.kl_divergence(jnp.log(jnp.array([0.5, 0.5])), jnp.array([1.0, 0.0]))
    assert np.allclose(value, np.log(2), **TOL)
    target = jnp.array([0.1, 0.6, 0.3])
    assert np.allclose(losses.kl_divergence(jnp.log(target), target), 0.0, atol=1e-7)


@pytest.mark.parametrize("example_shape", [(5,), (3, 5)], ids=["classes", "positions_x_classes"])
def test_kl_divergence_batch_mean_is_torch_batchmean(example_shape):
    # batchmean sums over every axis but the batch and divides by the batch size: the engine's
    # mean of per-example sums (over all of the example's elements, here positions too).
    rng = np.random.default_rng(0)
    log_probs = np_log_softmax_last(rng.normal(size=(4, *example_shape)))
    target = np.exp(np_log_softmax_last(2 * rng.normal(size=(4, *example_shape))))
    target[0, ..., 0] = 0.0  # a zero target probability
    expected = torch_kl_div_batchmean(log_probs, target)
    assert np.allclose(batch_mean(losses.kl_divergence, jnp.float32(log_probs), jnp.float32(target)),
                       expected, **TOL)


def np_log_softmax_last(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def test_kl_divergence_from_logits_is_stable():
    logits, target = jnp.array([1e4, 0.0, -1e4]), jnp.array([0.5, 0.5, 0.0])
    expected = 0.5 * np.log(0.5) * 2 - 0.5 * (0.0 + (-1e4))  # log_softmax = (0, -1e4, -2e4)
    value = losses.get_loss("kl_divergence", from_logits=True)(logits, target)
    assert np.isfinite(value) and np.allclose(value, expected, rtol=1e-6)
    gradient = jax.grad(lambda z: losses.kl_divergence(z, target, from_logits=True))(logits)
    assert np.all(np.isfinite(gradient))
    # Log-probabilities are unchanged by log_softmax, so both forms agree on them.
    log_probs = jnp.log(jnp.array([0.2, 0.3, 0.5]))
    assert np.allclose(losses.kl_divergence(log_probs, target, from_logits=True),
                       losses.kl_divergence(log_probs, target), **TOL)


def test_kl_divergence_target_must_match():
    with pytest.raises(ValueError, match=r"^kl_divergence: expected a target with 3 value\(s\) like the "
                                         r"output \(3,\), got target shape \(\)"):
        losses.kl_divergence(jnp.zeros(3), 1)


def test_cosine_embedding_by_hand():
    pair = jnp.array([[1.0, 0.0], [1.0, 1.0]])  # cos = 1 / sqrt(2)
    cos = 1 / np.sqrt(2)
    assert np.allclose(losses.cosine_embedding(pair, 1), 1 - cos, **TOL)
    assert np.allclose(losses.cosine_embedding(pair, jnp.array([-1.0])), cos, **TOL)  # margin 0
    assert np.allclose(losses.cosine_embedding(pair, -1, margin=0.5), cos - 0.5, **TOL)
    assert losses.cosine_embedding(pair, -1, margin=0.8) == 0.0  # below the margin: no push
    orthogonal = jnp.array([[1.0, 0.0], [0.0, 3.0]])
    assert losses.cosine_embedding(orthogonal, -1) == 0.0
    assert np.allclose(losses.cosine_embedding(orthogonal, 1), 1.0, **TOL)
    assert losses.cosine_embedding(pair, 0) == 0.0  # PyTorch: a target other than +-1 adds nothing
    # A zero embedding: cos = 0 (PyTorch's epsilon), finite gradients.
    zero = jnp.array([[0.0, 0.0], [1.0, 2.0]])
    assert np.allclose(losses.cosine_embedding(zero, 1), 1.0)
    assert np.all(np.isfinite(jax.grad(losses.cosine_embedding)(zero, 1)))


def test_cosine_embedding_batch_mean_matches_torch_formula():
    rng = np.random.default_rng(1)
    pairs = rng.normal(size=(6, 2, 5))
    targets = np.array([1, -1, 1, -1, -1, 1])
    loss = losses.get_loss("cosine_embedding", margin=-0.2)
    expected = torch_cosine_embedding_mean(pairs[:, 0], pairs[:, 1], targets, margin=-0.2)
    assert np.allclose(batch_mean(loss, jnp.float32(pairs), jnp.asarray(targets)), expected, **TOL)


def test_triplet_margin_by_hand():
    # d(a, pos) = 5, d(a, neg) = 1: 5 - 1 + 1 = 5 (eps = 1e-6 moves it by ~1e-6).
    triple = jnp.array([[0.0, 0.0], [3.0, 4.0], [1.0, 0.0]])
    assert np.allclose(losses.triplet_margin(triple), 5.0, atol=1e-5)
    assert np.allclose(losses.triplet_margin(triple, 0.0, eps=0.0), 5.0, rtol=1e-6)
    # Negative far enough: 1 - 3 + 1 < 0.
    assert losses.triplet_margin(jnp.array([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])) == 0.0
    # Swap: d(a, pos) = 2, d(a, neg) = sqrt(5), d(pos, neg) = 1.
    close = jnp.array([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0]])
    assert np.allclose(losses.triplet_margin(close, eps=0.0), 3 - np.sqrt(5), rtol=1e-6)
    assert np.allclose(losses.triplet_margin(close, eps=0.0, swap=True), 2.0, rtol=1e-6)
    # p = 1: d(a, pos) = 2, d(a, neg) = 3, margin 2: 2 - 3 + 2 = 1.
    manhattan = jnp.array([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    assert np.allclose(losses.triplet_margin(manhattan, eps=0.0, p=1.0, margin=2.0), 1.0, rtol=1e-6)
    # anchor == positive: eps inside the norm (PyTorch) keeps the distance, eps * sqrt(dim), and
    # its gradient finite; optax's eps outside, sqrt(0 + eps), would give 1e-3.
    with jax.enable_x64(True):
        same = jnp.array([[1.0, 2.0], [1.0, 2.0], [1.5, 2.0]], jnp.float64)
        eps = 1e-6
        expected = eps * np.sqrt(2) - np.hypot(-0.5 + eps, eps) + 1.0
        np.testing.assert_allclose(losses.triplet_margin(same), expected, rtol=1e-12)
        assert np.all(np.isfinite(jax.grad(losses.triplet_margin)(same)))


@pytest.mark.parametrize("args", [{}, {"margin": 0.5, "p": 1.0}, {"p": 3.0, "swap": True}],
                         ids=["defaults", "p1_margin", "p3_swap"])
def test_triplet_margin_batch_mean_matches_torch_formula(args):
    rng = np.random.default_rng(2)
    triples = rng.normal(size=(8, 3, 4))
    expected = torch_triplet_margin_mean(triples[:, 0], triples[:, 1], triples[:, 2], **args)
    loss = losses.get_loss("triplet_margin", **args)
    assert np.allclose(batch_mean(loss, jnp.float32(triples), jnp.zeros(8)), expected, **TOL)


@pytest.mark.parametrize("call,match", [
    (lambda: losses.cosine_embedding(jnp.zeros((3, 4)), 1),
     r"^cosine_embedding: expected an output \(2, dim\), the pair \(x1, x2\) stacked on the first axis, "
     r"got shape \(3, 4\) — apply the encoder to an example of shape \(2, features\)$"),
    (lambda: losses.cosine_embedding(jnp.zeros((2, 4)), jnp.ones(2)),
     r"^cosine_embedding: expected one target, 1 \(similar\) or -1 \(dissimilar\), got target shape \(2,\)$"),
    (lambda: losses.triplet_margin(jnp.zeros(12)),
     r"^triplet_margin: expected an output \(3, dim\), the \(anchor, positive, negative\) stacked on the "
     r"first axis, got shape \(12,\)"),
], ids=["pair_shape", "pair_target", "triple_shape"])
def test_embedding_loss_shape_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_embedding_loss_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        pair, triple = jnp.asarray(rng.normal(size=(2, 3))), jnp.asarray(rng.normal(size=(3, 3)))
        check_grads(jax.jit(lambda o: losses.cosine_embedding(o, 1)), (pair,), order=1, modes=["rev"])
        check_grads(jax.jit(lambda o: losses.cosine_embedding(o, -1, margin=-0.9)), (pair,), order=1,
                    modes=["rev"])
        check_grads(jax.jit(lambda o: losses.triplet_margin(o, margin=10.0)), (triple,), order=1,
                    modes=["rev"])
        log_probs = jax.nn.log_softmax(jnp.asarray(rng.normal(size=4)))
        target = jax.nn.softmax(jnp.asarray(rng.normal(size=4)))
        check_grads(jax.jit(lambda z: losses.kl_divergence(z, target, from_logits=True)), (log_probs,),
                    order=1, modes=["rev"])
