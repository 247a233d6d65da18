"""fit, evaluate, predict and train_population check their arrays against the model up front.

Each case failed deep inside JAX, trained silently or reported NaN before; now it is one
line naming the argument, the index or shape, and the fix — raised before anything compiles.
"""
import numpy as np
import pytest

import fdl
from fdl import nn
from fdl.population import MemberSpec, train_population

RNG = np.random.default_rng(0)
X = RNG.normal(size=(200, 40)).astype(np.float32)
Y = RNG.integers(0, 10, size=200).astype(np.int32)


def mlp():
    return nn.serial(nn.Dense(16), nn.Relu(), nn.Dense(10))


def with_label(index, value):
    y = Y.copy()
    y[index] = value
    return y


@pytest.fixture(scope="module")
def state():
    return fdl.init_train_state(mlp(), (40,), fdl.optim.make_optimizer("adam"), 0)


@pytest.mark.parametrize("call, message", [
    (lambda: fdl.fit(mlp(), (X, Y[:150]), verbose=0), r"^train: x has 200 examples but y has 150"),
    (lambda: fdl.fit(mlp(), (X, with_label(7, -1)), verbose=0), r"^train: label -1 at index 7"),
    (lambda: fdl.fit(mlp(), (X, with_label(3, 10)), verbose=0),
     r"^train: label 10 at index 3 is outside \[0, 10\) — the model has 10 logits"),
    (lambda: fdl.fit(nn.serial(nn.Dense(1)), (X, with_label(5, 9).astype(np.float32)[:, None]),
                     loss="binary_cross_entropy", verbose=0),
     r"^train: targets of binary_cross_entropy must be in \[0, 1\].*use cross_entropy"),
    (lambda: fdl.fit(mlp(), (X, Y), val=(X[:20, :39], Y[:20]), verbose=0),
     r"^val: examples have shape \(39,\), the model was built for \(40,\)"),
    (lambda: fdl.fit(mlp(), (X.reshape(200, 20, 2), Y), verbose=0), r"^train: .*flatten them first"),
    (lambda: fdl.fit(mlp(), (X, Y), epochs=-1, verbose=0), r"^epochs must be"),
])
def test_fit_refuses_bad_arrays_with_one_line(call, message):
    with pytest.raises(ValueError, match=message) as error:
        call()
    assert "\n" not in str(error.value)


def test_evaluate_refuses_out_of_range_labels_instead_of_reporting_nan(state):
    with pytest.raises(ValueError, match=r"^evaluate: label 12 at index 0 is outside \[0, 10\)"):
        fdl.evaluate(mlp(), state, (X, with_label(0, 12)))


def test_predict_refuses_a_wrong_shape_and_an_empty_input(state):
    with pytest.raises(ValueError, match=r"^predict: .*\(39,\)"):
        fdl.predict(mlp(), state, X[:, :39])
    with pytest.raises(ValueError, match=r"^predict: x is empty"):
        fdl.predict(mlp(), state, X[:0])


def test_train_population_checks_like_fit():
    common = dict(members=[MemberSpec(0)], optimizer={"name": "adam"}, epochs=1, batch_size=20, verbose=0)
    with pytest.raises(ValueError, match=r"^train: x has 200 examples but y has 150"):
        train_population(mlp(), (X, Y[:150]), **common)
    with pytest.raises(ValueError, match=r"^val: label 10 at index 3"):
        train_population(mlp(), (X, Y), (X, with_label(3, 10)), **common)
    with pytest.raises(ValueError, match=r"^epochs must be"):
        train_population(mlp(), (X, Y), **{**common, "epochs": 0})
