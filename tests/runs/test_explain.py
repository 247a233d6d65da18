"""fdl.explain / `fdl explain` against closed forms, hand-written JAX gradients and the IG completeness axiom."""
import functools
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fdl
from fdl.attribution import Explainer
from fdl.cli.main import main
from fdl.data import load, transform
from fdl.records.plots import plot_attributions
from fdl.runs.explain import explain

FEATURE = 3  # the one input the hand-built model reads


@pytest.fixture(scope="module")
def runs(shipped_runs):
    """The shipped MLP (standardized inputs) and CNN runs, loaded once, with 5 test inputs."""
    loaded = {name: fdl.load_run(shipped_runs[name]) for name in ("mlp", "cnn")}
    return loaded, raw_inputs(5)


def raw_inputs(n: int) -> np.ndarray:
    """The first n MNIST-1D test signals as a user has them (run.arguments.data holds them preprocessed)."""
    return np.asarray(load("mnist1d").test.x[:n], np.float32)


@pytest.fixture(scope="module")
def one_feature():
    """Dense(6 -> 2) whose weights are zero except on input FEATURE: logits = x[3] * w + b."""
    model = fdl.nn.Dense(2)
    state = fdl.init_train_state(model, (6,), fdl.optim.make_optimizer("sgd", learning_rate=0.1), 0)
    w = np.zeros((6, 2), np.float32)
    w[FEATURE] = [2.0, -1.5]
    state = state.replace(params={"w": jnp.asarray(w), "b": jnp.asarray([0.1, 0.2])})
    x = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    return model, state, x, w[FEATURE]


def mlp_forward(run, x, target):
    """The shipped MLP written out by hand for one raw example (40,): standardize, Dense, relu, Dense."""
    (_, stats), params = run.preprocessing, run.state.params
    h = jax.nn.relu(((x - stats.mean) / stats.scale) @ params["dense_1"]["w"] + params["dense_1"]["b"])
    return (h @ params["dense_3"]["w"] + params["dense_3"]["b"])[target]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_integrated_gradients_are_complete(runs, name):
    run, x = runs[0][name], runs[1]
    result = explain(run, x, method="integrated_gradients", steps=256)
    rows = np.arange(len(x))
    change = run.predict(x)[rows, result.targets] - run.predict(np.zeros_like(x))[rows, result.targets]
    np.testing.assert_array_equal(result.targets, np.argmax(run.predict(x), -1))  # the predicted class
    error = np.abs(result.attributions.sum(axis=1) - change) / np.abs(change)
    assert result.attributions.shape == x.shape and np.all(error < 1e-2), (name, error)


def test_one_feature_model_closed_forms(one_feature):
    model, state, x, w = one_feature
    logits = x[:, FEATURE, None] * w + np.asarray([0.1, 0.2])
    others = np.arange(6) != FEATURE
    saliency = explain(model, x, state=state)
    np.testing.assert_array_equal(saliency.targets, np.argmax(logits, -1))
    np.testing.assert_array_equal(saliency.attributions[:, others], 0.0)
    np.testing.assert_allclose(saliency.attributions[:, FEATURE], w[saliency.targets], rtol=1e-6)
    baseline = np.full(6, 0.5, np.float32)
    ig = explain(model, x, state=state, method="integrated_gradients", target=1, baseline=baseline, steps=4)
    np.testing.assert_array_equal(ig.attributions[:, others], 0.0)
    np.testing.assert_allclose(ig.attributions[:, FEATURE], w[1] * (x[:, FEATURE] - 0.5), rtol=1e-5)
    np.testing.assert_allclose(ig.outputs, logits, rtol=1e-6)


def test_a_model_with_one_output_is_explained_by_that_output(one_feature):
    x = one_feature[2]
    total = fdl.nn.Layer(lambda key, shape: ((), {}, {}), lambda p, s, x, *, key=None, train=False:
                         (jnp.sum(x ** 2), s), "SumOfSquares")
    result = Explainer(total).explain({}, {}, x, method="integrated_gradients", steps=3)
    np.testing.assert_allclose(result.attributions, x ** 2, rtol=1e-5)  # midpoint rule: exact for d/dx = 2x
    np.testing.assert_array_equal(result.targets, -1)


def test_saliency_is_the_gradient_of_the_hand_written_model_for_raw_inputs(runs):
    run, x = runs[0]["mlp"], runs[1]
    result = explain(run, x, target=np.array([0, 1, 2, 3, 9]))
    gradient = jax.jit(jax.grad(functools.partial(mlp_forward, run)))
    expected = [gradient(x[i], t) for i, t in enumerate([0, 1, 2, 3, 9])]
    np.testing.assert_allclose(result.attributions, np.stack(expected), rtol=1e-5, atol=1e-6)


def test_smoothgrad_is_the_mean_gradient_at_the_documented_noise(runs):
    run, x = runs[0]["mlp"], runs[1]
    result = explain(run, x, method="smoothgrad", samples=8, noise=0.2, seed=3)
    key = jax.random.key(3)
    noisy_gradients = jax.jit(jax.vmap(jax.grad(functools.partial(mlp_forward, run)), (0, None)))
    for i in range(len(x)):
        sigma = 0.2 * (x[i].max() - x[i].min())
        noisy = x[i] + sigma * jax.random.normal(jax.random.fold_in(key, i), (8, 40))
        expected = noisy_gradients(noisy, result.targets[i]).mean(0)
        np.testing.assert_allclose(result.attributions[i], expected, rtol=1e-4, atol=1e-6)
    again = explain(run, x, method="smoothgrad", samples=8, noise=0.2, seed=3)
    np.testing.assert_array_equal(again.attributions, result.attributions)
    other_seed = explain(run, x, method="smoothgrad", samples=8, noise=0.2, seed=4)
    assert not np.allclose(other_seed.attributions, result.attributions)
    # Cut into batches of 2 (the last one padded): each input keeps its own noise.
    preprocess = functools.partial(transform, *run.preprocessing)
    batched = Explainer(run.model, preprocess=preprocess, batch_size=2).explain(
        run.state.params, run.state.model_state, x, method="smoothgrad", samples=8, noise=0.2, seed=3)
    np.testing.assert_allclose(batched.attributions, result.attributions, rtol=1e-5, atol=1e-7)


def test_repeated_calls_compile_one_program_per_method(runs, compiles):
    run, x = runs[0]["mlp"], raw_inputs(3)  # 3 inputs: a batch shape no other test explains
    for method in ("saliency", "integrated_gradients", "smoothgrad"):
        with compiles.counting() as first:
            explain(run, x, method=method, steps=8 if method == "integrated_gradients" else None)
        with compiles.counting() as again:
            explain(run, x + 1.0, method=method, target=2, steps=8 if method == "integrated_gradients" else None)
        assert (len(first), len(again)) == (1, 0), method
    assert run.explainer is run.explainer


def test_cli_writes_the_attributions_and_a_capped_plot(shipped_runs, runs, tmp_path, capsys):
    run_copy = shutil.copytree(shipped_runs["mlp"], tmp_path / "run")
    x = raw_inputs(20)
    np.save(tmp_path / "x.npy", x)
    assert main(["explain", str(run_copy), str(tmp_path / "x.npy"), "--method", "integrated_gradients",
                 "--steps", "16", "--baseline", "0.5", "--target", "4"]) == 0
    out = capsys.readouterr().out
    folder = run_copy / "explain"  # the default --out
    expected = explain(runs[0]["mlp"], x, method="integrated_gradients", steps=16, baseline=0.5, target=4)
    np.testing.assert_allclose(np.load(folder / "attributions.npy"), expected.attributions, rtol=1e-5, atol=1e-7)
    assert "plot of the first 16 of 20 inputs" in out and '"targets": [4, 4' in out
    from matplotlib.image import imread
    assert imread(folder / "attributions.png").shape[:2] == (1080, 1280)  # 4 x 4 panels, not 20


def test_image_heat_map_is_red_where_attribution_is_positive(tmp_path):
    image = np.zeros((1, 8, 8), np.float32)
    attribution = np.zeros((1, 8, 8), np.float32)
    attribution[0, :, :4], attribution[0, :, 4:] = 1.0, -1.0
    pixels = plt_read(plot_attributions(image, attribution, tmp_path / "a.png"))
    red, blue = pixels[..., 0] - pixels[..., 2], pixels[..., 2] - pixels[..., 0]
    columns = np.arange(pixels.shape[1])
    assert columns[red.max(0) > 0.1].max() < columns[blue.max(0) > 0.1].min()  # red left of blue


def plt_read(path):
    from matplotlib.image import imread
    return imread(path)


@pytest.mark.parametrize("kwargs,message", [
    ({"method": "salency"}, r"method: unknown attribution method 'salency' — did you mean 'saliency'\?"),
    ({"target": 10}, r"target: class 10 \(input 0\) is out of range for the model's 10 outputs — give 0..9"),
    ({"target": [1, 2]}, r"target: shape \(2,\), expected one class index or \(5,\)"),
    ({"target": 1.5}, r"target: expected class indices \(ints\), got float64"),
    ({"steps": 8}, r"steps: method saliency takes no options — steps is an option of integrated_gradients"),
    ({"method": "integrated_gradients", "steps": 0}, r"steps: expected a whole number >= 1, got 0"),
    ({"method": "integrated_gradients", "baseline": np.zeros(3)}, r"baseline: shape \(3,\), expected a number"),
    ({"method": "smoothgrad", "noise": -1.0}, r"noise: expected a number >= 0"),
    ({"method": "smoothgrad", "samples": 2.5}, r"samples: expected a whole number >= 1, got 2.5"),
    ({"state": "x"}, r"state: a loaded run is explained with its own checkpoint"),
])
def test_bad_arguments_are_one_line_errors_naming_them(runs, kwargs, message):
    with pytest.raises(ValueError, match=message):
        explain(runs[0]["mlp"], runs[1], **kwargs)


def test_bad_inputs_and_models_are_refused(runs, one_feature):
    model, state, x, _ = one_feature
    with pytest.raises(ValueError, match=r"x: shape \(3, 30\), the model expects \(n, 40\)"):
        explain(runs[0]["mlp"], np.zeros((3, 30)))
    with pytest.raises(ValueError, match=r"explain: examples of shape \(5,\) need params\['w'\] of shape \(5, 2\)"):
        explain(model, x[:, :5], state=state)
    with pytest.raises(ValueError, match=r"state: explaining a bare model needs its trained state"):
        explain(model, x)
    with pytest.raises(TypeError, match=r"run_or_model: expected a LoadedRun \(fdl.load_run\) or an fdl.nn "
                                        r"Layer, got str"):
        explain("runs/mlp", x)
    total = fdl.nn.Layer(lambda key, shape: ((), {}, {}), lambda p, s, x, *, key=None, train=False: (jnp.sum(x), s),
                         "Sum")  # one number per example: there is no class to choose
    with pytest.raises(ValueError, match=r"target: the model gives one number per example"):
        Explainer(total).explain({}, {}, x, target=0)
    sequence = fdl.nn.Layer(lambda key, shape: ((2, 3), {}, {}), lambda p, s, x, *, key=None, train=False:
                            (jnp.zeros((2, 3)), s), "Sequence")
    with pytest.raises(ValueError, match=r"model: per-example output of shape \(2, 3\); attributions need one"):
        Explainer(sequence).explain({}, {}, x)
    with pytest.raises(ValueError, match=r"plot_attributions: 17 inputs, expected 1 to 16 per figure"):
        plot_attributions(np.zeros((17, 40)), np.zeros((17, 40)), "unused.png")
    with pytest.raises(ValueError, match=r"plot_attributions: inputs \(2, 40\) and attributions \(2, 39\) differ"):
        plot_attributions(np.zeros((2, 40)), np.zeros((2, 39)), "unused.png")


def test_cli_errors_are_one_line(shipped_runs, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((3, 30), np.float32))
    np.save(tmp_path / "x.npy", np.zeros((3, 40), np.float32))
    cases = [(["bad.npy"], "fdl explain: error: inputs file '{}': x: shape (3, 30), the model expects (n, 40)"
              .format(tmp_path / "bad.npy")),
             (["x.npy", "--target", "12"], "fdl explain: error: target: class 12 (input 0) is out of range"),
             (["x.npy", "--samples", "3"], "fdl explain: error: samples: method saliency takes no options")]
    for arguments, message in cases:
        assert main(["explain", str(shipped_runs["mlp"]), str(tmp_path / arguments[0]), *arguments[1:],
                     "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, err
    assert not (tmp_path / "out").exists()
