"""Populations of a user's custom step: member i equals a solo `fdl.fit(step=...)`.

Two steps: one model with a hand-written SGD step (members differ in learning rate; val scored
by an objective, train accuracy from the step's predictions, a per-member ReduceLROnPlateau),
and a two-model GAN-like step whose member states come from `init(seed)` (`fdl.init_train_state`
with dicts). SGD keeps the float32 differences between a vmapped population and one fit at
rounding size (Adam's normalization of tiny gradients would amplify them).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fdl
from fdl import nn
from fdl.objectives import PREDICTIONS, model_key, supervised
from fdl.optim import get_hyperparameter, make_optimizer, set_hyperparameter
from fdl.population import MemberSpec, Population, train_population
from fdl.train.state import step_key

N_TRAIN, N_VAL, FEATURES, CLASSES, LATENT, BATCH = 96, 40, 5, 3, 2, 16
NET = nn.serial(nn.Dense(6), nn.Tanh(), nn.Dropout(0.1), nn.Dense(CLASSES))
TX = make_optimizer("sgd", learning_rate=0.1)  # one transformation: each member's rate lives in its state
OBJECTIVE = supervised("cross_entropy")  # scores val (a custom step has no validation of its own)
MEMBERS = [MemberSpec(0, {"learning_rate": 0.3}), MemberSpec(1, {"learning_rate": 0.05})]
EPOCHS = 3
TRACES = []  # one entry per trace of the classifier's step


def plateau():
    # mode="max" on a falling val_loss: it halves each member's own rate from the second epoch on
    return [fdl.callbacks.ReduceLROnPlateau("val_loss", mode="max", factor=0.5, patience=0)]


def make_step(net, tx):
    """A supervised step written by hand: dropout from the step's key, predictions for the metrics."""
    apply = fdl.batched(net)

    def batch_loss(params, model_state, batch, key):
        x, y = batch
        outputs, model_state = apply(params, model_state, x, key=key, train=True)
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(outputs, y)), (model_state, outputs)

    def step(state, batch):
        TRACES.append(1)
        (loss, (model_state, outputs)), grads = jax.value_and_grad(batch_loss, has_aux=True)(
            state.params, state.model_state, batch, model_key(step_key(state)))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(params=optax.apply_updates(state.params, updates), model_state=model_state,
                                  opt_state=opt_state)
        return new_state, {"loss": loss, "grad_norm": optax.tree.norm(grads), PREDICTIONS: (outputs, batch[1])}

    return step


STEP = make_step(NET, TX)

# The GAN-like pair: z (LATENT,) -> signal (FEATURES,) and signal -> (1,) logit, an SGD each.
NETS = {"generator": nn.serial(nn.Dense(4), nn.LeakyRelu(0.2), nn.Dense(FEATURES)),
        "discriminator": nn.serial(nn.Dense(4), nn.LeakyRelu(0.2), nn.Dense(1))}
SHAPES = {"generator": (LATENT,), "discriminator": (FEATURES,)}
OPTIMIZERS = {"generator": make_optimizer("sgd", learning_rate=0.1),
              "discriminator": make_optimizer("sgd", learning_rate=0.1)}
# Each model its own rate ("<model>/<name>"): the generator's and the discriminator's differ.
GAN_MEMBERS = [MemberSpec(0, {"generator/learning_rate": 0.05, "discriminator/learning_rate": 0.03}),
               MemberSpec(1, {"generator/learning_rate": 0.02, "discriminator/learning_rate": 0.04})]


def gan_init(seed):
    return fdl.init_train_state(NETS, SHAPES, OPTIMIZERS, seed)


def bce(logits, target: float):
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def gan_step(state, x):
    """One discriminator update on real and generated signals, then one generator update."""
    g_apply, d_apply = fdl.batched(NETS["generator"]), fdl.batched(NETS["discriminator"])
    params, model_state, opt_state = state.params, state.model_state, state.opt_state
    z = jax.random.normal(step_key(state), (x.shape[0], LATENT))

    def d_loss(d_params, fake):
        real_logits, _ = d_apply(d_params, model_state["discriminator"], x, train=True)
        fake_logits, _ = d_apply(d_params, model_state["discriminator"], fake, train=True)
        return bce(real_logits, 1.0) + bce(fake_logits, 0.0)

    def g_loss(g_params, d_params):
        fake, _ = g_apply(g_params, model_state["generator"], z, train=True)
        return bce(d_apply(d_params, model_state["discriminator"], fake, train=True)[0], 1.0)

    fake, _ = g_apply(params["generator"], model_state["generator"], z, train=True)
    d_value, d_grads = jax.value_and_grad(d_loss)(params["discriminator"], jax.lax.stop_gradient(fake))
    d_updates, d_opt = OPTIMIZERS["discriminator"].update(d_grads, opt_state["discriminator"],
                                                          params["discriminator"])
    d_params = optax.apply_updates(params["discriminator"], d_updates)
    g_value, g_grads = jax.value_and_grad(g_loss)(params["generator"], d_params)
    g_updates, g_opt = OPTIMIZERS["generator"].update(g_grads, opt_state["generator"], params["generator"])
    new_params = {"generator": optax.apply_updates(params["generator"], g_updates), "discriminator": d_params}
    return (state.replace(params=new_params, opt_state={"generator": g_opt, "discriminator": d_opt}),
            {"loss": d_value + g_value, "d_loss": d_value, "g_loss": g_value})


def close(got, want, rtol=1e-5, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), got, want)


def member(tree, i):
    return jax.tree.map(lambda a: a[i], tree)


def timeless(history):
    return [{k: v for k, v in row.items() if k not in ("time_s", "steps_per_s")} for row in history]


def same_histories(got, want, label):
    assert len(got) == len(want), label
    for row, expected in zip(got, timeless(want)):
        assert sorted(row) == sorted(expected), label
        np.testing.assert_allclose([row[k] for k in sorted(row)], [expected[k] for k in sorted(row)],
                                   rtol=1e-5, atol=1e-7, err_msg=f"{label} {sorted(row)}")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_TRAIN + N_VAL, FEATURES)).astype(np.float32)
    y = np.argmax(x[:, :CLASSES] + 0.5 * rng.normal(size=(len(x), CLASSES)), axis=1).astype(np.int32)
    return (x[:N_TRAIN], y[:N_TRAIN]), (x[N_TRAIN:], y[N_TRAIN:])


@pytest.fixture(scope="module")
def trained(data):
    """(population, result): the classifier's step, vmapped (the default strategy), val and callbacks."""
    population = Population(NET, step=STEP, optimizer=TX, objective=OBJECTIVE, batch_size=BATCH,
                            metrics=["accuracy"])
    return population, population.train(*data, members=MEMBERS, epochs=EPOCHS, callbacks=plateau, verbose=0)


def test_each_member_of_a_custom_step_equals_a_solo_fit(data, trained):
    population, result = trained
    assert result.strategy == "vmap"
    for i, spec in enumerate(MEMBERS):
        state, history = fdl.fit(NET, data[0], val=data[1], step=STEP, objective=OBJECTIVE, seed=spec.seed,
                                 optimizer=make_optimizer("sgd", **spec.hyperparams), epochs=EPOCHS,
                                 batch_size=BATCH, metrics=["accuracy"], callbacks=plateau(), verbose=0)
        same_histories(result.histories[i], history, f"member {i}")
        close(member(result.states.params, i), state.params)
        assert int(result.states.step[i]) == EPOCHS * (N_TRAIN // BATCH)
    assert {"grad_norm", "accuracy", "val_accuracy", "learning_rate"} <= set(result.final[0])
    np.testing.assert_allclose([h["learning_rate"] for h in result.histories[0]], [0.3, 0.3, 0.15], rtol=1e-6)
    # val is scored by the objective; Population.evaluate scores with it too
    scores = population.evaluate(result.states, data[1])
    for i, final in enumerate(result.final):
        np.testing.assert_allclose([scores[i]["loss"], scores[i]["accuracy"]],
                                   [final["val_loss"], final["val_accuracy"]], rtol=1e-5)


def test_a_diverging_member_stops_alone_and_new_values_compile_nothing(data, trained):
    population, _ = trained
    TRACES.clear()
    result = population.train(*data, members=[MemberSpec(2, {"learning_rate": 0.1}),
                                              MemberSpec(3, {"learning_rate": float("inf")})],
                              epochs=EPOCHS, verbose=0)
    assert TRACES == []  # new seeds and rates: the compiled population epoch is reused
    assert result.stopped_epoch == [None, 1] and [len(h) for h in result.histories] == [EPOCHS, 1]
    assert np.isfinite(result.final[0]["loss"]) and not np.isfinite(result.final[1]["loss"])


def test_a_gan_population_over_seeds_equals_fit_from_init(data):
    x = data[0][0]
    result = train_population(None, x, members=GAN_MEMBERS, step=gan_step, init=gan_init, epochs=2,
                              batch_size=BATCH, strategy="map", verbose=0)
    assert result.strategy == "map"
    init = jax.jit(gan_init)  # one program for both members' solo states
    for i, spec in enumerate(GAN_MEMBERS):
        state = init(spec.seed)  # fit's state= is init(seed) with each model's rate set in its optimizer
        state = state.replace(opt_state={name: set_hyperparameter(opt_state, "learning_rate",
                                                                  spec.hyperparams[f"{name}/learning_rate"])
                                         for name, opt_state in state.opt_state.items()})
        state, history = fdl.fit(None, x, step=gan_step, state=state, epochs=2, batch_size=BATCH, verbose=0)
        same_histories(result.histories[i], history, f"member {i}")
        close(member(result.states.params, i), state.params)
        for name in NETS:  # each model's optimizer holds its own rate
            np.testing.assert_allclose(get_hyperparameter(member(result.states.opt_state, i)[name],
                                                          "learning_rate"), spec.hyperparams[f"{name}/learning_rate"])
    assert {"d_loss", "g_loss"} <= set(result.final[0])


def test_a_plain_optax_transformation_logs_no_learning_rate_like_fit(data):
    plain = optax.sgd(0.1)  # nothing injected: the members differ in seed only
    step = make_step(NET, plain)
    result = train_population(NET, data[0], members=[MemberSpec(0), MemberSpec(1)], step=step, optimizer=plain,
                              epochs=1, batch_size=BATCH, verbose=0)
    state, history = fdl.fit(NET, data[0], step=step, optimizer=plain, seed=1, epochs=1, batch_size=BATCH,
                             verbose=0)
    same_histories(result.histories[1], history, "member 1")
    assert "learning_rate" not in result.final[1]
    close(member(result.states.params, 1), state.params)


def test_custom_step_mistakes_are_one_line_errors(data):
    train, val = data
    settings = dict(members=MEMBERS, epochs=1, batch_size=BATCH, verbose=0)
    with_momentum = {**settings, "members": [MemberSpec(0, {"momentum": 0.9}), MemberSpec(1, {"momentum": 0.5})]}
    with pytest.raises(ValueError, match=r"^step: a custom step must return \(state, logs\) with logs\['loss'\]"):
        train_population(NET, train, step=lambda state, batch: (state, {"error": 0.0}), optimizer=TX, **settings)
    with pytest.raises(ValueError, match=r"^val: a custom step has no validation objective — pass objective="):
        train_population(NET, train, val, step=STEP, optimizer=TX, **settings)
    with pytest.raises(ValueError, match=r"^members\[0\]\.hyperparams\['momentum'\]: the 'discriminator' "
                                         r"optimizer of the member's state does not inject 'momentum' — build init's"):
        train_population(None, train[0], step=gan_step, init=gan_init, **with_momentum)
    mixed = {"generator": optax.sgd(0.1), "discriminator": OPTIMIZERS["discriminator"]}
    with pytest.raises(ValueError, match=r"^members\[0\]\.hyperparams\['learning_rate'\]: the 'generator' "
                                         r"optimizer of the member's state does not inject 'learning_rate'"):
        train_population(None, train[0], step=gan_step, init=lambda seed: fdl.init_train_state(
            NETS, SHAPES, mixed, seed), **settings)
    with pytest.raises(ValueError, match=r"^members\[0\]\.hyperparams\['momentum'\]: .* give optimizer\['momentum'\] "
                                         r"a float"):
        train_population(NET, train, step=STEP, optimizer={"name": "sgd"}, **with_momentum)
    with pytest.raises(ValueError, match=r"^members\[0\]\.hyperparams\['momentum'\]: the optimizer of the member's "
                                         r"state does not inject 'momentum' — build it with fdl.optim.make_optimizer"):
        train_population(NET, train, step=STEP, optimizer=TX, **with_momentum)
    for name, message in (("critic/learning_rate", r"the member's state has no model 'critic' \(its models are "
                                                   r"\['discriminator', 'generator'\]\) — name one of them"),
                          ("generator/momentum", r"the 'generator' optimizer of the member's state does not "
                                                 r"inject 'momentum'")):
        with pytest.raises(ValueError, match=rf"^members\[0\]\.hyperparams\['{name}'\]: {message}"):
            train_population(None, train[0], step=gan_step, init=gan_init,
                             **{**settings, "members": [MemberSpec(0, {name: 0.1}), MemberSpec(1, {name: 0.2})]})
    with pytest.raises(ValueError, match=r"^members\[0\]\.hyperparams\['net/learning_rate'\]: the member's state "
                                         r"has no model 'net' \(it holds one model\)"):
        train_population(NET, train, step=STEP, optimizer=TX, **{**settings, "members": [
            MemberSpec(0, {"net/learning_rate": 0.1}), MemberSpec(1, {"net/learning_rate": 0.2})]})
    with pytest.raises(ValueError, match=r"^train_population: only some members set 'momentum' — give every "
                                         r"member a value$"):
        train_population(NET, train, step=STEP, optimizer=TX,
                         **{**settings, "members": [MemberSpec(0), MemberSpec(1, {"momentum": 0.9})]})
    with pytest.raises(TypeError, match=r"^init: expected init\(seed\) -> fdl.TrainState"):
        train_population(None, train[0], step=gan_step, init=lambda seed: {"seed": seed}, **settings)
    with pytest.raises(ValueError, match=r"^model: None trains only with a custom step= and its init="):
        train_population(None, train, step=STEP, optimizer=TX, **settings)
    with pytest.raises(ValueError, match=r"^objective/metrics: they need the model"):
        train_population(None, train[0], step=gan_step, init=gan_init, metrics=["accuracy"], **settings)
    with pytest.raises(ValueError, match=r"^loss/step: both given"):
        train_population(NET, train, step=STEP, optimizer=TX, loss="mse", **settings)
    with pytest.raises(ValueError, match=r"^step: a custom step does the whole update — augment its batch"):
        train_population(NET, train, step=STEP, optimizer=TX, augment=lambda key, x: x, **settings)
    with pytest.raises(ValueError, match=r"^optimizer: unused with step= and init="):
        train_population(None, train[0], step=gan_step, init=gan_init, optimizer=TX, **settings)
    with pytest.raises(ValueError, match=r"^optimizer: missing"):
        train_population(NET, train, step=STEP, **settings)
    with pytest.raises(TypeError, match=r"^optimizer: expected .* got int"):
        train_population(NET, train, step=STEP, optimizer=3, **settings)
    with pytest.raises(ValueError, match=r"^evaluate: a custom step has no objective to score"):
        Population(NET, step=STEP, optimizer=TX, batch_size=BATCH).evaluate(None, val)
