"""A model that takes a dict of inputs: trained, evaluated and predicted like one that takes an array."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl import nn, objectives


def two_inputs() -> nn.Layer:
    """Dense(3) over the concatenation of x["a"] (2,) and x["b"] (4,): the plain Dense(3) on (6,)."""
    dense = nn.Dense(3)

    def init(key, input_shape):
        return dense.init(key, (input_shape["a"][0] + input_shape["b"][0],))

    def apply(params, state, x, *, key=None, train=False):
        return dense.apply(params, state, jnp.concatenate([x["a"], x["b"]]), key=key, train=train)

    return nn.Layer(init, apply, "TwoInputs")


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = {"a": rng.normal(size=(64, 2)).astype(np.float32), "b": rng.normal(size=(64, 4)).astype(np.float32)}
    return x, (x["a"][:, 0] + x["b"][:, 1] > 0).astype(np.int32)


@pytest.mark.parametrize("fused", [True, False])
def test_a_dict_input_model_trains_as_the_same_model_on_the_concatenated_array(data, fused):
    x, y = data
    joined = np.concatenate([x["a"], x["b"]], axis=1)
    common = dict(epochs=2, batch_size=16, verbose=0, metrics=["accuracy"],
                  optimizer={"name": "sgd", "learning_rate": 0.1}, fused=fused)
    supervised = dict(objective=objectives.supervised("cross_entropy"), **common)
    state, history = fdl.fit(two_inputs(), (x, y), val=(x, y), **supervised)
    reference, expected = fdl.fit(nn.Dense(3), (joined, y), val=(joined, y), **supervised)
    # Keras' model.fit({"a": xa, "b": xb}, y): the loss= path on the same tuple batch
    keras, keras_history = fdl.fit(two_inputs(), (x, y), val=(x, y), loss="cross_entropy", **common)
    for a, b, c in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params),
                       jax.tree.leaves(keras.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(c, a, rtol=1e-6, atol=1e-6)
    for key in ("val_loss", "val_accuracy"):
        np.testing.assert_allclose(history[key], expected[key], rtol=1e-6)
        np.testing.assert_allclose(keras_history[key], history[key], rtol=1e-6)
    scores = fdl.evaluate(two_inputs(), keras, (x, y), loss="cross_entropy", metrics=["accuracy"])
    np.testing.assert_allclose([scores["loss"], scores["accuracy"]],
                               [keras_history["val_loss"][-1], keras_history["val_accuracy"][-1]], rtol=1e-6)
    np.testing.assert_allclose(fdl.predict(two_inputs(), state, x), fdl.predict(nn.Dense(3), reference, joined),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("val, message", [
    (lambda x: {"a": x["a"]}, r"^val: x has no input 'b'; the model takes inputs \['a', 'b'\] — give x\['b'\] of "
                              r"shape \(n, 4\)$"),
    (lambda x: {**x, "c": x["b"]}, r"^val: x\['c'\] is not an input of the model, which takes inputs \['a', 'b'\]"),
    (lambda x: {"a": x["a"], "b": x["b"][:, :3]}, r"^val: x\['b'\] has examples of shape \(3,\), the model was "
                                                  r"built for \(4,\)"),
    (lambda x: {"a": x["a"], "b": x["b"][:60]}, r"^val\['b'\] has 60 examples but val\['a'\] has 64"),
    (lambda x: x["a"], r"^val: x is one array of examples of shape \(2,\), the model takes a dict of inputs "
                       r"\['a', 'b'\] — pass x as \{name: array\}"),
], ids=["missing", "extra", "shape", "length", "array"])
def test_a_dict_val_is_checked_against_the_training_inputs_naming_the_key(data, val, message):
    x, y = data
    with pytest.raises(ValueError, match=message):  # raised before anything compiles
        fdl.fit(two_inputs(), (x, y), val=(val(x), y), loss="cross_entropy", epochs=1, batch_size=16, verbose=0)


def test_a_dict_train_batch_names_the_input_the_model_reads_and_x_lacks(data):
    x, y = data
    with pytest.raises(ValueError, match=r"^train: the model reads input 'b', which x does not have \(its inputs "
                                         r"are \['a'\]\) — give x\['b'\]$"):
        fdl.fit(two_inputs(), ({"a": x["a"]}, y), loss="cross_entropy", epochs=1, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match=r"^train: x has 64 examples but y has 60"):
        fdl.fit(two_inputs(), (x, y[:60]), loss="cross_entropy", epochs=1, batch_size=16, verbose=0)
    with pytest.raises(ValueError, match=r"^train: x\['b'\] has dtype <U\d+; expected real numbers — convert it "
                                         r"with x\['b'\]\.astype\(np\.float32\)"):
        fdl.fit(two_inputs(), ({"a": x["a"], "b": x["b"].astype(str)}, y), loss="cross_entropy", verbose=0)


def test_a_dict_of_inputs_of_different_lengths_is_named_by_its_leaf(data):
    x, _ = data
    state = fdl.init_train_state(two_inputs(), {"a": (2,), "b": (4,)}, fdl.optim.make_optimizer("sgd", learning_rate=0.1), 0)
    with pytest.raises(ValueError, match=r"predict\['b'\] has 63 examples|predict\['a'\] has 64 examples"):
        fdl.predict(two_inputs(), state, {"a": x["a"], "b": x["b"][:63]})


def test_a_population_of_a_dict_input_model_equals_each_members_fit(data):
    from fdl.population import MemberSpec, train_population

    x, y = data
    common = dict(loss="cross_entropy", metrics=["accuracy"], epochs=2, batch_size=16)
    result = train_population(two_inputs(), (x, y), (x, y), members=[MemberSpec(0), MemberSpec(1)],
                              optimizer={"name": "sgd", "learning_rate": 0.1}, verbose=0, **common)
    for i, seed in enumerate((0, 1)):
        state, history = fdl.fit(two_inputs(), (x, y), val=(x, y), seed=seed, verbose=0,
                                 optimizer=fdl.optim.make_optimizer("sgd", learning_rate=0.1), **common)
        for member, solo in zip(jax.tree.leaves(result.states.params), jax.tree.leaves(state.params)):
            np.testing.assert_allclose(member[i], solo, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose([h["val_loss"] for h in result.histories[i]], history["val_loss"], rtol=1e-5)
