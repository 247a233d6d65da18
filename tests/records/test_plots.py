"""PNG plots: one per scalar quantity, a confusion matrix, an image grid; all open as images."""
import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.image import imread

from fdl.records import history_series, image_grid, plot_confusion_matrix, plot_history, plot_images


def test_plot_history_one_png_per_scalar_quantity(tmp_path, fit_loop, logs_for):
    rows = [logs_for(epoch) for epoch in (1, 2, 3)]
    paths = plot_history(rows, tmp_path / "plots")
    # Arrays (per-class, confusion matrices) and timings are skipped; val_ joins its train curve.
    assert sorted(path.name for path in paths) == ["accuracy.png", "learning_rate.png", "loss.png"]
    for path in paths:
        image = imread(path)
        assert image.shape == (400, 640, 4), (path.name, image.shape)
        assert image[..., :3].std() > 0.05  # something was drawn, not a blank canvas


def test_history_series_pairs_train_and_val_per_epoch(logs_for):
    rows = [logs_for(epoch) for epoch in (1, 2, 3)]
    series = history_series(rows)
    assert list(series) == ["loss", "accuracy", "learning_rate"]
    assert series["loss"]["train"] == ([1, 2, 3], [row["loss"] for row in rows])
    assert series["loss"]["val"] == ([1, 2, 3], [row["val_loss"] for row in rows])
    assert list(series["learning_rate"]) == ["train"]


def test_history_series_drops_a_key_once_it_is_not_scalar():
    rows = [{"epoch": 1, "loss": 1.0, "odd": 2.0, "flag": True, "name": "a"},
            {"epoch": 2, "loss": np.float32(0.5), "odd": np.zeros(3)}]
    assert history_series(rows) == {"loss": {"train": ([1, 2], [1.0, 0.5])}}
    assert plot_history([], "unused") == []


def test_plot_confusion_matrix(tmp_path):
    matrix = np.array([[50, 2, 1], [3, 40, 7], [0, 5, 60]])
    path = plot_confusion_matrix(matrix, tmp_path / "cm.png", class_names=["cat", "dog", "owl"])
    image = imread(path)
    assert path.exists() and image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300


@pytest.mark.parametrize("matrix, names, match", [
    (np.zeros((2, 3)), None, r"expected a \(classes, classes\) matrix, got shape \(2, 3\)"),
    (np.zeros((2, 2)), ["a"], "1 class_names for a 2-class matrix"),
])
def test_plot_confusion_matrix_errors(tmp_path, matrix, names, match):
    with pytest.raises(ValueError, match=match):
        plot_confusion_matrix(matrix, tmp_path / "cm.png", class_names=names)


def test_image_grid_places_images_row_by_row():
    images = np.arange(5)[:, None, None] * np.ones((5, 2, 3))
    grid = image_grid(images, ncols=3, pad=1)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1)
    assert grid[0, 0] == 0 and grid[0, 4] == 1 and grid[0, 8] == 2 and grid[3, 0] == 3 and grid[3, 4] == 4
    assert np.isnan(grid[2, 0]) and np.isnan(grid[3, 8])  # padding and the empty sixth cell


@pytest.mark.parametrize("shape", [(10, 8, 8), (10, 8, 8, 1), (10, 8, 8, 3)])
def test_plot_images_grid(tmp_path, shape):
    images = np.random.default_rng(0).uniform(size=shape)
    image = imread(plot_images(images, tmp_path / "samples.png", ncols=5))
    assert image.shape[:2] == (200, 500)  # 2 rows x 5 columns of 1-inch cells at 100 dpi
    assert image[..., :3].std() > 0.05


def test_plot_images_rejects_other_shapes(tmp_path):
    with pytest.raises(ValueError, match=r"expected images \(n, height, width\).*got shape \(8, 8\)"):
        plot_images(np.zeros((8, 8)), tmp_path / "x.png")
