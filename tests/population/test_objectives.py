"""Populations with an objective on a pytree batch: member i equals a solo `fdl.fit(objective=...)`.

One hand-written objective on a dict batch {"x", "y", "w"} (a weighted squared error that
also logs the unweighted mean error and gives predictions for the "mse" metric). SGD, so
that float32 rounding differences between the vmapped population and a single fit stay at
rounding size instead of being amplified by Adam's normalization of tiny gradients.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.objectives import PREDICTIONS
from fdl.population import MemberSpec, Population, evaluate_population, train_population

N_TRAIN, N_VAL, FEATURES = 100, 30, 6
MEMBERS = [MemberSpec(0, {"learning_rate": 0.05}), MemberSpec(1, {"learning_rate": 0.0})]
# eval batches of 16 over 30 val examples: one full batch and a last one of 14 (both paths).
COMMON = dict(optimizer={"name": "sgd"}, epochs=2, batch_size=20, metrics=["mse"], eval_batch_size=16,
              input_shape=(FEATURES,), verbose=0)


def weighted_error(apply, params, model_state, batch, key):
    """sum_i w_i |f(x_i) - y_i|^2 / sum_i w_i; logs the unweighted mean error."""
    outputs, model_state = apply(params, model_state, batch["x"], key=fdl.objectives.model_key(key))
    errors = jnp.sum((outputs - batch["y"]) ** 2, axis=-1)
    value = jnp.sum(batch["w"] * errors) / jnp.sum(batch["w"])
    return value, (model_state, {"mean_error": jnp.mean(errors), PREDICTIONS: (outputs, batch["y"])})


def model():
    return nn.serial(nn.Dense(5), nn.Tanh(), nn.Dense(2))


def split(rng, n):
    x = rng.normal(size=(n, FEATURES)).astype(np.float32)
    return {"x": x, "y": np.stack([x[:, 0] - x[:, 1], x[:, 2] * x[:, 3]], 1).astype(np.float32),
            "w": rng.uniform(0.5, 2.0, size=n).astype(np.float32)}


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return split(rng, N_TRAIN), split(rng, N_VAL)


@pytest.fixture(scope="module")
def population_and_result(data):
    population = Population(model(), objective=weighted_error, optimizer=COMMON["optimizer"],
                            batch_size=COMMON["batch_size"], metrics=COMMON["metrics"],
                            eval_batch_size=COMMON["eval_batch_size"])
    result = population.train(*data, members=MEMBERS, epochs=COMMON["epochs"], input_shape=(FEATURES,),
                              verbose=0)
    return population, result


def test_each_member_equals_a_solo_fit_with_the_objective(data, population_and_result):
    _, result = population_and_result
    for i, member in enumerate(MEMBERS):
        state, history = fdl.fit(model(), data[0], val=data[1], objective=weighted_error, seed=member.seed,
                                 **{**COMMON, "optimizer": {"name": "sgd", **member.hyperparams}})
        jax.tree.map(lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
                     jax.tree.map(lambda a: a[i], result.states.params), state.params)
        assert len(result.histories[i]) == len(history) == 2
        for got, want in zip(result.histories[i], history):
            want = {k: v for k, v in want.items() if k not in ("time_s", "steps_per_s")}
            assert sorted(got) == sorted(want), f"member {i}"
            np.testing.assert_allclose([got[k] for k in sorted(want)], [want[k] for k in sorted(want)],
                                       rtol=1e-5, err_msg=f"member {i} {sorted(want)}")


def test_objective_logs_are_averaged_per_epoch_in_train_and_val(data, population_and_result):
    _, result = population_and_result
    train, val = data
    apply = fdl.batched(model())

    def mean_error(state, split):
        outputs, _ = apply(state.params, state.model_state, jnp.asarray(split["x"]), train=False)
        return float(np.mean(np.sum((np.asarray(outputs) - split["y"]) ** 2, axis=1)))

    # Member 1 has learning rate 0: every epoch's train mean_error is the mean over its 5 steps of
    # 20 examples each = the mean over all 100 examples at the initial params.
    initial = fdl.init_train_state(model(), (FEATURES,), fdl.optim.make_optimizer("sgd"), 1)
    np.testing.assert_allclose([h["mean_error"] for h in result.histories[1]], [mean_error(initial, train)] * 2,
                               rtol=1e-5)
    # Val: batch values weighted by batch size (16 and 14) = the mean over all 30 examples.
    for i in range(len(MEMBERS)):
        state = jax.tree.map(lambda a: a[i], result.states)
        np.testing.assert_allclose(result.final[i]["val_mean_error"], mean_error(state, val), rtol=1e-5)
        np.testing.assert_allclose(result.final[i]["val_mse"], mean_error(state, val) / 2, rtol=1e-5)


def test_evaluate_scores_pytree_data_with_the_objective(data, population_and_result):
    population, result = population_and_result
    scores = population.evaluate(result.states, data[1], input_shape=(FEATURES,))
    same = evaluate_population(model(), result.states, data[1], objective=weighted_error, metrics=["mse"],
                               input_shape=(FEATURES,), batch_size=16)
    for i, final in enumerate(result.final):
        assert sorted(scores[i]) == ["loss", "mean_error", "mse"]
        for name, value in scores[i].items():
            np.testing.assert_allclose([value, same[i][name]], [final[f"val_{name}"]] * 2, rtol=1e-6)


def test_bad_combinations_are_one_line_errors_naming_the_argument(data):
    members, settings = MEMBERS[:1], {**COMMON, "epochs": 1}
    with pytest.raises(ValueError, match=r"^loss/objective: both given — give one"):
        train_population(model(), *data, members=members, loss="mse", objective=weighted_error, **settings)
    with pytest.raises(ValueError, match=r"^val: a custom step has no validation objective"):
        train_population(model(), *data, members=members, step=lambda state, batch: (state, {}), **settings)
    with pytest.raises(ValueError, match=r"^input_shape: the train batch does not show"):
        train_population(model(), *data, members=members, objective=weighted_error,
                         **{**settings, "input_shape": None})
    short = {**data[0], "w": data[0]["w"][:-1]}
    with pytest.raises(ValueError, match=r"^train\['x'\] has 100 examples but train\['w'\] has 99"):
        train_population(model(), short, members=members, objective=weighted_error, **settings)

    def no_predictions(apply, params, model_state, batch, key):
        value, (model_state, logs) = weighted_error(apply, params, model_state, batch, key)
        return value, (model_state, {"mean_error": logs["mean_error"]})

    with pytest.raises(ValueError, match=r"^metrics \[mse\]: the objective gives no predictions"):
        train_population(model(), *data, members=members, objective=no_predictions, **settings)
