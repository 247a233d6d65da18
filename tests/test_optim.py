"""fdl.optim: closed-form first updates, injected hyperparameters, schedules, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fdl import optim
from fdl.optim import current_learning_rate, make_optimizer, make_schedule, set_hyperparameter

# Hyperparameters are float32 in the state; updates are a few float32 operations.
TOL = dict(rtol=1e-5, atol=1e-7)
PARAMS = {"w": jnp.array([[1.0, -2.0], [0.5, 3.0]]), "b": jnp.array([0.25, -0.5])}
GRADS = {"w": jnp.array([[0.1, -0.2], [0.3, 0.0]]), "b": jnp.array([-0.4, 0.05])}


def first_update(optimizer, grads=GRADS, params=PARAMS):
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return updates


def tree_allclose(actual, expected, **tolerance):
    return all(jax.tree.leaves(jax.tree.map(lambda a, e: np.allclose(a, e, **(tolerance or TOL)), actual, expected)))


def test_sgd_first_update_is_minus_learning_rate_times_gradient():
    updates = first_update(make_optimizer("sgd", learning_rate=0.1))
    assert tree_allclose(updates, jax.tree.map(lambda g: -0.1 * g, GRADS))


@pytest.mark.parametrize("nesterov, factor", [(False, [1.0, 1.9]), (True, [1.9, 2.71])])
def test_sgd_momentum_two_steps(nesterov, factor):
    # trace t_k = g + 0.9 t_{k-1}; update -lr * t_k, or -lr * (g + 0.9 t_k) with Nesterov.
    optimizer = make_optimizer("sgd", learning_rate=0.1, momentum=0.9, nesterov=nesterov)
    state = optimizer.init(PARAMS)
    for step_factor in factor:
        updates, state = optimizer.update(GRADS, state, PARAMS)
        assert tree_allclose(updates, jax.tree.map(lambda g: -0.1 * step_factor * g, GRADS))


def test_adam_first_update_is_minus_learning_rate_times_sign():
    updates = first_update(make_optimizer("adam", learning_rate=0.01))
    # g / (|g| + eps) with eps = 1e-8; the zero gradient stays zero.
    assert tree_allclose(updates, jax.tree.map(lambda g: -0.01 * jnp.sign(g), GRADS), atol=1e-6)


def test_adamw_decoupled_and_sgd_coupled_weight_decay():
    adamw = first_update(make_optimizer("adamw", learning_rate=0.01, weight_decay=0.1))
    expected = jax.tree.map(lambda g, p: -0.01 * (jnp.sign(g) + 0.1 * p), GRADS, PARAMS)
    assert tree_allclose(adamw, expected, atol=1e-6)
    sgd = first_update(make_optimizer("sgd", learning_rate=0.1, weight_decay=0.1))
    assert tree_allclose(sgd, jax.tree.map(lambda g, p: -0.1 * (g + 0.1 * p), GRADS, PARAMS))


def test_config_form_equals_keyword_form():
    config = {"name": "rmsprop", "learning_rate": 0.01, "decay": 0.8}
    assert tree_allclose(first_update(make_optimizer(**config)), first_update(make_optimizer("rmsprop", learning_rate=0.01, decay=0.8)))


@pytest.mark.parametrize("name", sorted(optim.OPTIMIZERS))
def test_every_optimizer_steps_under_jit_with_readable_learning_rate(name):
    extra = {"key": jax.random.key(0)} if name == "noisy_sgd" else {}  # a key-less noisy_sgd warns
    optimizer = make_optimizer(name, learning_rate=0.01, weight_decay=1e-3, clip_global_norm=1.0, **extra)
    state = optimizer.init(PARAMS)
    updates, state = jax.jit(optimizer.update)(GRADS, state, PARAMS)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(updates))
    assert np.allclose(current_learning_rate(state), 0.01)


def test_common_optimizers_are_present():
    wanted = {"sgd", "adam", "adamw", "nadam", "adamax", "radam", "rmsprop", "adagrad", "adadelta",
              "adafactor", "lamb", "lars", "lion", "novograd", "sm3", "yogi", "fromage", "noisy_sgd"}
    assert wanted <= set(optim.OPTIMIZERS)


def test_float_hyperparameters_are_injected_and_flags_are_static():
    state = make_optimizer("sgd", learning_rate=0.1, momentum=0.9, nesterov=True).init(PARAMS)
    hyperparams = optim._injected_states(state)[0].hyperparams
    assert set(hyperparams) == {"learning_rate", "momentum"}
    assert hyperparams["momentum"].dtype == jnp.float32


# ---- schedules ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, reference",
    [
        ({"name": "constant"}, optax.constant_schedule(1.0)),
        ({"name": "cosine", "decay_steps": 10, "alpha": 0.1}, optax.cosine_decay_schedule(1.0, 10, alpha=0.1)),
        ({"name": "warmup_cosine", "warmup_steps": 3, "decay_steps": 10}, optax.warmup_cosine_decay_schedule(0.0, 1.0, 3, 10)),
        ({"name": "exponential", "transition_steps": 2, "decay_rate": 0.5}, optax.exponential_decay(1.0, 2, 0.5)),
        ({"name": "piecewise", "boundaries_and_scales": {"4": 0.1}}, optax.piecewise_constant_schedule(1.0, {4: 0.1})),
        ({"name": "linear", "end_value": 0.0, "transition_steps": 8}, optax.linear_schedule(1.0, 0.0, 8)),
    ],
    ids=lambda value: value["name"] if isinstance(value, dict) else "",
)
def test_make_schedule_matches_optax_with_peak_one(spec, reference):
    schedule = make_schedule(spec)
    assert np.allclose([schedule(step) for step in range(12)], [reference(step) for step in range(12)], **TOL)


def test_make_schedule_number_is_a_constant():
    assert make_schedule(0.5) == 0.5


def test_learning_rate_readable_and_follows_schedule():
    spec = {"name": "warmup_cosine", "warmup_steps": 2, "decay_steps": 6}
    optimizer = make_optimizer("sgd", learning_rate=0.5, schedule=spec)
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.5, 2, 6)
    state, update = optimizer.init(PARAMS), jax.jit(optimizer.update)
    assert np.allclose(current_learning_rate(state), reference(0))
    for step in range(6):
        updates, state = update(GRADS, state, PARAMS)
        # The readable rate is the one the update just applied.
        assert np.allclose(current_learning_rate(state), reference(step), **TOL)
        assert tree_allclose(updates, jax.tree.map(lambda g: -reference(step) * g, GRADS))


def test_callable_and_named_schedules():
    halving = make_optimizer("sgd", learning_rate=1.0, schedule=lambda step: 0.5**step)
    state = halving.init(PARAMS)
    for _ in range(3):
        _, state = halving.update(GRADS, state, PARAMS)
    assert np.allclose(current_learning_rate(state), 0.25)
    assert np.allclose(current_learning_rate(make_optimizer(schedule="constant").init(PARAMS)), 1e-3)


# ---- injected hyperparameters ---------------------------------------------------------------


def test_set_hyperparameter_changes_next_update_without_retracing():
    optimizer = make_optimizer("sgd", learning_rate=0.1, momentum=0.0)
    traces = []

    @jax.jit
    def step(state):
        traces.append(None)
        return optimizer.update(GRADS, state, PARAMS)

    state = optimizer.init(PARAMS)
    updates, state = step(state)
    assert tree_allclose(updates, jax.tree.map(lambda g: -0.1 * g, GRADS))
    state = set_hyperparameter(state, "learning_rate", 0.01)
    assert np.allclose(current_learning_rate(state), 0.01)
    updates, state = step(state)
    assert tree_allclose(updates, jax.tree.map(lambda g: -0.01 * g, GRADS))
    assert len(traces) == 1


def test_set_learning_rate_rescales_a_schedule():
    optimizer = make_optimizer("sgd", learning_rate=1.0, schedule={"name": "linear", "end_value": 0.0, "transition_steps": 4})
    state = optimizer.init(PARAMS)
    _, state = optimizer.update(GRADS, state, PARAMS)
    state = set_hyperparameter(state, "learning_rate", 0.1)
    updates, state = optimizer.update(GRADS, state, PARAMS)  # step 1: multiplier 0.75
    assert np.allclose(current_learning_rate(state), 0.075)
    assert tree_allclose(updates, jax.tree.map(lambda g: -0.075 * g, GRADS))


def test_learning_rate_can_be_vmapped_for_a_population():
    learning_rates = jnp.array([0.1, 0.2, 0.3])
    optimizer_for = lambda learning_rate: make_optimizer("sgd", learning_rate=learning_rate)

    def member_update(learning_rate):
        optimizer = optimizer_for(learning_rate)
        updates, state = optimizer.update(GRADS, optimizer.init(PARAMS), PARAMS)
        return updates["b"], current_learning_rate(state)

    updates, rates = jax.vmap(member_update)(learning_rates)
    assert np.allclose(rates, learning_rates)
    assert np.allclose(updates, -learning_rates[:, None] * GRADS["b"])


# ---- clipping and accumulation --------------------------------------------------------------


def test_clipping_bounds_the_update_norm():
    big = jax.tree.map(lambda g: 100.0 * g, GRADS)
    updates = first_update(make_optimizer("sgd", learning_rate=1.0, clip_global_norm=0.5), grads=big)
    assert np.allclose(optax.tree.norm(updates), 0.5, **TOL)
    small = first_update(make_optimizer("sgd", learning_rate=1.0, clip_global_norm=10.0))
    assert tree_allclose(small, jax.tree.map(lambda g: -g, GRADS))  # below the bound: untouched


def test_multisteps_applies_the_mean_gradient_every_k():
    optimizer = make_optimizer("sgd", learning_rate=0.1, accumulate_steps=3)
    state = optimizer.init(PARAMS)
    for step, scale in enumerate([1.0, 2.0, 6.0]):
        updates, state = optimizer.update(jax.tree.map(lambda g: scale * g, GRADS), state, PARAMS)
        expected_scale = 0.0 if step < 2 else -0.1 * 3.0  # mean of 1, 2, 6 is 3
        assert tree_allclose(updates, jax.tree.map(lambda g: expected_scale * g, GRADS)), step
    assert np.allclose(current_learning_rate(state), 0.1)
    state = set_hyperparameter(state, "learning_rate", 0.2)
    assert np.allclose(current_learning_rate(state), 0.2)


# ---- errors ---------------------------------------------------------------------------------


def test_optimizer_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'adamm' — did you mean 'adam'\\? valid: .*sgd"):
        make_optimizer("adamm")
    with pytest.raises(ValueError, match="unknown optimizer 'adam' hyperparameter 'momentum' — .*valid: b1, b2"):
        make_optimizer("adam", momentum=0.9)
    with pytest.raises(ValueError, match="accumulate_steps must be an int >= 1, got 0"):
        make_optimizer("sgd", accumulate_steps=0)


def test_schedule_errors():
    with pytest.raises(ValueError, match="unknown schedule 'cosin' — did you mean 'cosine'"):
        make_schedule({"name": "cosin", "decay_steps": 10})
    with pytest.raises(ValueError, match="unknown schedule 'cosine' hyperparameter 'decay_step' — did you mean 'decay_steps'"):
        make_schedule({"name": "cosine", "decay_step": 10})
    with pytest.raises(ValueError, match="'peak_value' is fixed to 1 .* set learning_rate instead"):
        make_schedule({"name": "warmup_cosine", "peak_value": 0.1, "warmup_steps": 1, "decay_steps": 5})
    with pytest.raises(ValueError, match="schedule 'cosine': .*decay_steps"):
        make_schedule({"name": "cosine"})


def test_hyperparameter_access_errors():
    state = make_optimizer("adam").init(PARAMS)
    with pytest.raises(ValueError, match="unknown injected hyperparameter 'learning_rte' — did you mean 'learning_rate'"):
        set_hyperparameter(state, "learning_rte", 0.1)
    with pytest.raises(ValueError, match="no injected hyperparameters .*make_optimizer"):
        current_learning_rate(optax.adam(1e-3).init(PARAMS))


def test_get_hyperparameter_reads_the_base_value_before_the_schedule():
    from fdl.optim import get_hyperparameter, make_optimizer
    optimizer = make_optimizer("sgd", learning_rate=0.5, schedule={"name": "cosine", "decay_steps": 10})
    state = optimizer.init({"w": jnp.zeros(2)})
    _, state = optimizer.update({"w": jnp.ones(2)}, state, {"w": jnp.zeros(2)})
    assert float(get_hyperparameter(state, "learning_rate")) == 0.5
    with pytest.raises(ValueError, match="unknown injected hyperparameter 'learnig_rate'"):
        get_hyperparameter(state, "learnig_rate")
