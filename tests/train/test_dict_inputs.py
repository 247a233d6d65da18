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
    common = dict(objective=objectives.supervised("cross_entropy"), epochs=2, batch_size=16, verbose=0,
                  metrics=["accuracy"], optimizer={"name": "sgd", "learning_rate": 0.1}, fused=fused)
    state, history = fdl.fit(two_inputs(), (x, y), val=(x, y), **common)
    reference, expected = fdl.fit(nn.Dense(3), (joined, y), val=(joined, y), **common)
    for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(reference.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([row["val_loss"] for row in history], [row["val_loss"] for row in expected],
                               rtol=1e-6)
    np.testing.assert_allclose(fdl.predict(two_inputs(), state, x), fdl.predict(nn.Dense(3), reference, joined),
                               rtol=1e-6, atol=1e-6)


def test_a_dict_of_inputs_of_different_lengths_is_named_by_its_leaf(data):
    x, _ = data
    state = fdl.init_train_state(two_inputs(), {"a": (2,), "b": (4,)}, fdl.optim.make_optimizer("sgd", learning_rate=0.1), 0)
    with pytest.raises(ValueError, match=r"predict\['b'\] has 63 examples|predict\['a'\] has 64 examples"):
        fdl.predict(two_inputs(), state, {"a": x["a"], "b": x["b"][:63]})


def test_a_population_names_a_dict_input_model_it_does_not_take(data):
    from fdl.population import train_population

    with pytest.raises(ValueError, match="^input_shape: a model that takes a dict of inputs trains with fdl.fit"):
        train_population(two_inputs(), data, members=[{"seed": 0}], objective=objectives.supervised("cross_entropy"),
                         optimizer={"name": "sgd", "learning_rate": 0.1},
                         epochs=1, batch_size=16, verbose=0)
