"""Tests of the up-front argument checks of fit/evaluate/predict (fdl.train.checks)."""
import functools

import numpy as np
import optax
import pytest

from fdl import losses, nn
from fdl.data import validate
from fdl.nn.core import Layer
from fdl.train.checks import (check_data, check_examples, check_model_input, check_positive_int,
                              check_targets, loss_name)
from fdl.train.state import init_train_state

SEED = 0


def _x(n=6, *shape):
    return np.random.default_rng(SEED).normal(size=(n, *(shape or (4,)))).astype(np.float32)


def _labels(n=6, classes=3):
    return np.arange(n) % classes


def _params(model, input_shape):
    return init_train_state(model, input_shape, optax.sgd(0.1), SEED).params


# --- loss_name ---------------------------------------------------------------------------------

class _NamedLoss:
    name = "binary_cross_entropy"

    def __call__(self, output, target):
        return losses.binary_cross_entropy(output, target)


@pytest.mark.parametrize("loss, name", [
    ("mse", "mse"),
    (None, None),
    (losses.cross_entropy, "cross_entropy"),
    (losses.LOSSES["elbo_bernoulli"], "elbo_bernoulli"),
    (losses.cross_entropy_with(label_smoothing=0.1), "cross_entropy"),
    (_NamedLoss(), "binary_cross_entropy"),
    (lambda output, target: 0.0, None),
    (functools.partial(lambda output, target, scale: 0.0, scale=2.0), None),
])
def test_loss_name_normalizes_names_objects_and_fdl_functions(loss, name):
    assert loss_name(loss) == name


# --- check_positive_int -------------------------------------------------------------------------

def test_positive_int_returns_a_python_int():
    value = check_positive_int("epochs", np.int64(3))
    assert value == 3 and type(value) is int


@pytest.mark.parametrize("value", [-1, 0])
def test_epochs_below_one_is_rejected(value):
    with pytest.raises(ValueError, match=rf"epochs must be an int >= 1, got {value} — pass epochs=1"):
        check_positive_int("epochs", value)


@pytest.mark.parametrize("value, kind", [(2.0, "float"), (True, "bool"), ("3", "str")])
def test_non_integer_epochs_is_rejected(value, kind):
    with pytest.raises(ValueError, match=rf"epochs must be an int >= 1, got .* \({kind}\) — pass a "
                                         "whole number"):
        check_positive_int("epochs", value)


def test_batch_size_above_the_examples_is_rejected():
    with pytest.raises(ValueError, match=r"batch_size must be an int in \[1, 100\] \(the number of "
                                         r"training examples is 100\), got 128 — pass batch_size=100"):
        check_positive_int("batch_size", 128, maximum=100)


# --- check_examples ----------------------------------------------------------------------------

def test_examples_return_their_count():
    assert check_examples("train", _x(6), _labels(6)) == 6
    assert check_examples("predict", _x(2)) == 2


def test_length_mismatch_names_role_and_both_counts():
    x, y = _x(200), _labels(200)
    with pytest.raises(ValueError, match=r"^train: x has 200 examples but y has 150 — give one "
                                         "target per example$"):
        check_examples("train", x, y[:150])


def test_empty_input_is_rejected():
    with pytest.raises(ValueError, match=r"^predict: x is empty \(shape \(0, 4\)\) — give at least"):
        check_examples("predict", _x(6)[:0])


def test_one_example_without_its_batch_axis_is_rejected_with_both_fixes():
    with pytest.raises(ValueError, match=r"predict: x has shape \(4,\); expected \(n, \*input_shape\)"
                                         r".*x\[None\].*x\[:, None\]"):
        check_examples("predict", _x(6)[0])


def test_non_numeric_features_are_rejected():
    with pytest.raises(ValueError, match=r"train: x has dtype <U1; expected real numbers"):
        check_examples("train", np.array([["a", "b"]]))


@pytest.mark.parametrize("bad, name", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_feature_names_example_and_feature_index(bad, name):
    x = _x(6)
    x[4, 2] = bad
    with pytest.raises(ValueError, match=rf"^val: x\[4\] holds {name} at feature index \(2,\) — drop"):
        check_examples("val", x)


def test_non_finite_scan_finds_a_value_in_a_later_block(monkeypatch):
    monkeypatch.setattr(validate, "_CHUNK_VALUES", 8)  # 2 rows of 4 values per block (the scan is fdl.data's)
    x = _x(9)
    x[7, 1] = np.nan
    with pytest.raises(ValueError, match=r"train: x\[7\] holds nan at feature index \(1,\)"):
        check_examples("train", x)


def test_finite_false_skips_the_scan():
    x = _x(6)
    x[0, 0] = np.nan
    assert check_examples("train", x, finite=False) == 6


def test_scalar_targets_are_rejected():
    with pytest.raises(ValueError, match=r"train: y is a scalar; expected one target per example, "
                                         r"shape \(6, \.\.\.\)"):
        check_examples("train", _x(6), np.int64(3))


def test_string_labels_are_rejected():
    with pytest.raises(ValueError, match=r"train: y has dtype <U1; expected numbers .*return_inverse"):
        check_examples("train", _x(2), np.array(["cat", "dog"]).astype("<U1"))


# --- check_model_input ------------------------------------------------------------------------

def test_model_input_returns_the_output_shape():
    assert check_model_input("train", nn.models.mlp((5,), 3), (4,)) == (3,)


def test_other_feature_size_than_the_training_one_is_named():
    with pytest.raises(ValueError, match=r"^val: examples have shape \(39,\), the model was built for "
                                         r"\(40,\) — give val examples of shape \(40,\)"):
        check_model_input("val", nn.models.mlp((5,), 3), (39,), expected_shape=(40,))


def test_same_size_other_layout_suggests_the_reshape():
    with pytest.raises(ValueError, match=r"val: examples have shape \(40, 2\), the model was built for "
                                         r"\(80,\) — reshape with x\.reshape\(\(-1, 80\)\)"):
        check_model_input("val", nn.models.mlp((5,), 3), (40, 2), expected_shape=(80,))


def test_layer_complaint_is_kept_and_prefixed_with_the_role_and_shape():
    model = nn.serial(nn.Conv1D(2, 3), nn.Flatten(), nn.Dense(3))
    with pytest.raises(ValueError, match=r"^train: examples of shape \(40,\) do not fit the model — "
                                         r"serial\[0\] Conv1D: expected input \(length, channels\)"):
        check_model_input("train", model, (40,))


def test_type_error_of_a_layer_is_reported_on_one_line():
    def init(key, input_shape):
        raise TypeError("dot_general requires contracting dimensions to have the same shape\nmore")

    with pytest.raises(ValueError, match=r"^predict: examples of shape \(3,\) do not fit the model — "
                                         r"dot_general requires contracting dimensions[^\n]*$"):
        check_model_input("predict", Layer(init, lambda *a, **k: None, "Broken"), (3,))


def test_state_params_of_another_input_shape_are_named():
    model = nn.models.mlp((5,), 3)
    with pytest.raises(ValueError, match=r"^predict: examples of shape \(39,\) need "
                                         r"params\['dense_1'\]\['w'\] of shape \(39, 5\), but the "
                                         r"state's is \(40, 5\)"):
        check_model_input("predict", model, (39,), params=_params(model, (40,)))


def test_three_axis_examples_into_a_dense_state_are_named():
    model = nn.serial(nn.Dense(5), nn.Dense(3))
    with pytest.raises(ValueError, match=r"evaluate: examples of shape \(40, 2\) need "
                                         r"params\['dense_0'\]\['w'\] of shape \(2, 5\)"):
        check_model_input("evaluate", model, (40, 2), params=_params(model, (40,)))


def test_params_of_another_model_are_rejected():
    params = _params(nn.serial(nn.Dense(5), nn.Dense(3)), (4,))
    with pytest.raises(ValueError, match=r"predict: the state's params do not belong to this model "
                                         r"\(params\['dense_3'\]\['b'\] is missing from the state\)"):
        check_model_input("predict", nn.models.mlp((5,), 3), (4,), params=params)


def test_matching_params_pass():
    model = nn.models.mlp((5,), 3)
    assert check_model_input("predict", model, (4,), params=_params(model, (4,))) == (3,)


# --- check_targets: cross_entropy ----------------------------------------------------------------

def test_integer_labels_pass_untouched():
    y = _labels(6)
    assert check_targets("train", y, (3,), "cross_entropy") is y


def test_whole_float_labels_become_int32():
    y = check_targets("train", np.array([0.0, 2.0, 1.0]), (3,), losses.cross_entropy)
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, [0, 2, 1])


def test_float_one_hot_labels_pass():
    y = np.eye(3, dtype=np.float32)[_labels(6)]
    assert check_targets("train", y, (3,), "cross_entropy") is y


def test_soft_probability_rows_pass():
    y = np.array([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    assert check_targets("train", y, (3,), "cross_entropy") is y


def test_sequence_labels_pass():
    y = np.zeros((2, 5), np.int32)
    assert check_targets("train", y, (5, 3), "cross_entropy") is y


def test_label_equal_to_the_number_of_logits_names_the_index():
    y = np.array([0, 1, 2, 10, 4])
    with pytest.raises(ValueError, match=r"^train: label 10 at index 3 is outside \[0, 10\) — the "
                                         r"model has 10 logits; for 11 classes end it with Dense\(11\)"):
        check_targets("train", y, (10,), "cross_entropy")


def test_negative_label_is_named():
    y = np.array([0, 1, -1, 2])
    with pytest.raises(ValueError, match=r"^evaluate: label -1 at index 2 is outside \[0, 3\) — class "
                                         r"labels are 0\.\.2; remap or drop the negative ones"):
        check_targets("evaluate", y, (3,), "cross_entropy")


def test_class_labels_into_one_logit_suggest_binary_cross_entropy():
    with pytest.raises(ValueError, match=r"label 1 at index 1 is outside \[0, 1\) — for two classes "
                                         r"use binary_cross_entropy"):
        check_targets("train", np.array([0, 1]), (1,), "cross_entropy")


def test_fractional_label_is_named():
    y = np.array([0.0, 1.0, 2.0, 1.5])
    with pytest.raises(ValueError, match=r"^train: label 1\.5 at index 3 is not a whole number — "
                                         r"cross_entropy takes class indices 0\.\.2"):
        check_targets("train", y, (3,), losses.cross_entropy_with(label_smoothing=0.1))


def test_scalar_output_for_cross_entropy_is_rejected():
    with pytest.raises(ValueError, match=r"train: cross_entropy needs \(num_classes,\) logits per "
                                         r"example, the model outputs shape \(\)"):
        check_targets("train", _labels(4), (), "cross_entropy")


def test_one_hot_values_outside_zero_one_are_rejected():
    y = np.eye(3)[_labels(4)]
    y[2, 1] = 2.0
    with pytest.raises(ValueError, match=r"train: cross_entropy target rows hold probabilities in "
                                         r"\[0, 1\], got 2 at index \(2, 1\)"):
        check_targets("train", y, (3,), "cross_entropy")


def test_multi_hot_rows_suggest_binary_cross_entropy():
    y = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    with pytest.raises(ValueError, match=r"train: the cross_entropy target row at index 1 sums to 2, "
                                         r"not 1 — .*binary_cross_entropy"):
        check_targets("train", y, (3,), "cross_entropy")


def test_examples_with_extra_axes_through_dense_are_a_data_error_not_a_loss_error():
    # (n, 40, 2) into Dense layers: the model keeps the 40 axis and outputs (40, 10)
    model = nn.serial(nn.Dense(5), nn.Dense(10))
    with pytest.raises(ValueError, match=r"^train: y has per-example shape \(\), but cross_entropy on "
                                         r"the model's output \(40, 10\) .* examples of shape \(40, 2\)"
                                         r" — flatten them first"):
        check_data("train", model, _x(3, 40, 2), _labels(3, 10), loss="cross_entropy")


# --- check_targets: binary_cross_entropy, regression, elbo, unknown -----------------------------

def test_bce_column_of_float_targets_passes():
    y = np.array([[0.0], [1.0], [0.25]], np.float32)
    assert check_targets("train", y, (1,), "binary_cross_entropy") is y


def test_class_labels_into_one_logit_with_bce_suggest_cross_entropy():
    y = np.array([0, 1, 2, 3, 4, 9, 8])
    with pytest.raises(ValueError, match=r"^train: targets of binary_cross_entropy must be in \[0, 1\], "
                                         r"got 2 at index 2 — for 10 classes use cross_entropy with "
                                         r"10 logits$"):
        check_targets("train", y, (1,), _NamedLoss())


def test_negative_bce_target_suggests_relabelling():
    with pytest.raises(ValueError, match=r"got -1 at index 1 — relabel the negative class as 0"):
        check_targets("train", np.array([1, -1, 0]), (1,), "binary_cross_entropy")


def test_fractional_bce_target_above_one_is_rejected():
    with pytest.raises(ValueError, match=r"got 1\.5 at index 0 — targets are probabilities"):
        check_targets("train", np.array([1.5, 0.5]), (1,), "binary_cross_entropy")


def test_bce_target_count_must_match_the_logits():
    with pytest.raises(ValueError, match=r"train: binary_cross_entropy needs 1 target value\(s\) per "
                                         r"example like the model's output \(1,\), y has per-example "
                                         r"shape \(3,\) — end the model with Dense\(3\)"):
        check_targets("train", np.zeros((2, 3)), (1,), "binary_cross_entropy")


def test_regression_targets_pass_untouched():
    y = np.array([[0.5, -3.0], [1e6, 2.0]])
    assert check_targets("train", y, (2,), losses.mse) is y


def test_regression_target_size_must_match_the_output():
    with pytest.raises(ValueError, match=r"val: mse needs 2 target value\(s\) per example like the "
                                         r"model's output \(2,\), y has per-example shape \(\)"):
        check_targets("val", np.zeros(4), (2,), "mse")


def test_non_finite_target_is_named():
    with pytest.raises(ValueError, match=r"^train: y\[2\] holds nan — drop or impute"):
        check_targets("train", np.array([0.0, 1.0, np.nan]), (1,), "mse")


def test_unknown_loss_gets_only_the_generic_checks():
    y = np.array([[-5.0, 7.5, 1e3]])
    assert check_targets("train", y, (10,), lambda output, target: 0.0) is y
    with pytest.raises(ValueError, match=r"train: y\[\(0, 1\)\] holds inf"):
        check_targets("train", np.array([[0.0, np.inf]]), (10,), lambda output, target: 0.0)


def test_several_outputs_get_only_the_generic_checks():
    y = np.ones((2, 9))
    assert check_targets("train", y, ((3,), (2,)), "cross_entropy") is y


def test_elbo_bernoulli_targets_must_be_in_zero_one():
    model = nn.models.vae(2, (3,))
    x = np.full((2, 4), 255.0, np.float32)
    with pytest.raises(ValueError, match=r"train: targets of elbo_bernoulli must be in \[0, 1\], got "
                                         r"255 at index \(0, 0\) — scale the inputs"):
        check_data("train", model, x, x, loss="elbo_bernoulli")


def test_elbo_targets_scaled_to_zero_one_pass():
    model = nn.models.vae(2, (3,))
    x = np.full((2, 4), 0.5, np.float32)
    n, out_shape, y = check_data("train", model, x, x, loss="elbo_bernoulli")
    assert (n, out_shape, y is x) == (2, ((4,), (2,), (2,)), True)


# --- check_data (what fit/evaluate/predict call) ------------------------------------------------

def test_check_data_runs_the_length_check_first():
    x, y = _x(200), _labels(200)
    with pytest.raises(ValueError, match=r"^train: x has 200 examples but y has 150"):
        check_data("train", nn.models.mlp((5,), 3), x, y[:150], loss="cross_entropy")


def test_check_data_for_prediction_checks_the_state_params():
    model = nn.models.mlp((5,), 3)
    assert check_data("predict", model, _x(2), params=_params(model, (4,))) == (2, (3,), None)
    with pytest.raises(ValueError, match=r"predict: examples of shape \(5,\) need"):
        check_data("predict", model, _x(2, 5), params=_params(model, (4,)))
