"""PNG plots of a run: learning curves, a confusion matrix, an image grid, attributions.

Drawn with matplotlib's object API (`Figure` + the Agg canvas), never pyplot,
so plotting changes no global state, opens no window and needs no display.
matplotlib is imported inside the functions: `import fdl.records` works
without it (install with `pip install "fdl[records]"`).

- `plot_history(rows, out_dir)`: one PNG per logged scalar quantity (train and
  val_ curves together): loss.png, accuracy.png, learning_rate.png, ...
- `plot_confusion_matrix(matrix, path)`: an annotated heatmap, rows true class.
- `plot_images(images, path)`: a grid of (h, w) or (h, w, 1|3) images.
- `plot_attributions(inputs, attributions, path)`: up to 16 inputs with their
  attributions (fdl.attribution): signals above bars, heat maps over images.
"""
from __future__ import annotations

import io
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np

from fdl.io import to_python, write_bytes

__all__ = ["INSTALL_HINT", "SKIPPED_KEYS", "require", "as_scalar", "split_key", "history_series",
           "plot_history", "plot_confusion_matrix", "image_grid", "plot_images", "MAX_ATTRIBUTION_PANELS",
           "plot_attributions"]

INSTALL_HINT = 'pip install "fdl[records]"'

# Keys that are the x axis or timings, not learning curves.
SKIPPED_KEYS = frozenset({"epoch", "step", "time_s", "steps_per_s"})
_SPLIT_PREFIXES = (("val_", "val"), ("test_", "test"))
# A learning curve's fixed margins (fractions of its 6.4 x 4 in figure): room for tick labels
# such as "1e-3" or "0.875", the axis labels and the title. tight_layout would measure them,
# but that draws the figure twice: it was 40% of the plots' time at the end of a run.
CURVE_MARGINS = {"left": 0.12, "right": 0.97, "bottom": 0.12, "top": 0.92}


def require(package: str):
    """Imports and returns `package`, or raises ImportError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError as error:
        raise ImportError(f"{package} is not installed — {INSTALL_HINT} (or pip install "
                          f"{package})") from error


def _figure(width: float, height: float):
    require("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return write_bytes(path, buffer.getvalue())


def as_scalar(value) -> float | None:
    """float(value) for a real, non-bool scalar (Python, numpy or 0-d array), None for anything else.

    Plots and TensorBoard keep the keys for which this is a number; per-class
    arrays, confusion matrices and flags are left out.
    """
    if getattr(value, "shape", None) == ():  # numpy / jax scalars: their kind by `to_python`
        try:
            value = to_python(value)
        except TypeError:  # complex, object
            return None
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def split_key(key: str) -> tuple[str, str]:
    """("val", "accuracy") for "val_accuracy", ("train", "loss") for "loss"."""
    for prefix, split in _SPLIT_PREFIXES:
        if key.startswith(prefix) and len(key) > len(prefix):
            return split, key[len(prefix):]
    return "train", key


def history_series(rows: list[dict]) -> dict[str, dict[str, tuple[list, list]]]:
    """quantity -> split -> (epochs, values) for every key that is a scalar in all its rows.

    The x value is the row's "epoch" (1, 2, ... if absent); keys in
    `SKIPPED_KEYS` and keys with any non-scalar value (per-class arrays,
    confusion matrices) are left out.
    """
    series: dict[str, dict[str, tuple[list, list]]] = {}
    non_scalar = set()
    for index, row in enumerate(rows):
        epoch = row.get("epoch", index + 1)
        for key, value in row.items():
            if key in SKIPPED_KEYS or key in non_scalar:
                continue
            scalar = as_scalar(value)
            split, quantity = split_key(key)
            if scalar is None:
                non_scalar.add(key)
                series.get(quantity, {}).pop(split, None)
                continue
            xs, ys = series.setdefault(quantity, {}).setdefault(split, ([], []))
            xs.append(epoch)
            ys.append(scalar)
    return {quantity: splits for quantity, splits in series.items() if splits}


def _file_name(quantity: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", quantity) + ".png"


def plot_history(rows: list[dict], out_dir: str | os.PathLike) -> list[Path]:
    """Writes one learning-curve PNG per scalar quantity in `rows` and returns their paths.

    `loss.png` holds the train and val loss per epoch, `accuracy.png` the
    train and val accuracy if both are logged, and so on for every metric;
    `learning_rate.png` the learning rate (log scale when it spans more than
    a factor of 10). Non-scalar entries and timings are skipped.

    Args:
      rows: per-epoch logs as `fit` gives callbacks (its History, or
        fdl.records.read_jsonl of metrics.jsonl).
      out_dir: the folder for the PNGs (created if missing).

    Returns:
      the written paths, in the order the quantities were first logged.
    """
    out_dir = Path(out_dir)
    paths = []
    for quantity, splits in history_series(rows).items():
        figure = _figure(6.4, 4.0)
        axes = figure.add_subplot()
        for split, (xs, ys) in splits.items():
            axes.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3, label=split)
        values = [y for _, ys in splits.values() for y in ys if math.isfinite(y)]
        if quantity == "learning_rate" and values and min(values) > 0 and max(values) > 10 * min(values):
            axes.set_yscale("log")
        axes.set_xlabel("epoch")
        axes.set_ylabel(quantity.replace("_", " "))
        axes.set_title(quantity.replace("_", " "))
        axes.grid(alpha=0.3)
        if len(splits) > 1 or quantity != "learning_rate":
            axes.legend()
        figure.subplots_adjust(**CURVE_MARGINS)
        paths.append(_save(figure, out_dir / _file_name(quantity)))
    return paths


def plot_confusion_matrix(matrix, path: str | os.PathLike, class_names=None,
                          title: str = "Confusion matrix") -> Path:
    """Writes an annotated heatmap of a confusion matrix to `path` (PNG).

    Args:
      matrix: (classes, classes) counts; rows are the true class, columns the
        predicted one (fdl.metrics' "confusion_matrix").
      path: the PNG to write (folders created).
      class_names: optional labels, one per class (default 0, 1, ...).
      title: the figure title.

    Returns:
      `path` as a Path.

    Raises:
      ValueError: `matrix` is not square, or `class_names` has the wrong length.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: expected a (classes, classes) matrix, got shape "
                         f"{matrix.shape}")
    classes = matrix.shape[0]
    names = [str(i) for i in range(classes)] if class_names is None else [str(n) for n in class_names]
    if len(names) != classes:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class_names for a {classes}-class "
                         "matrix — give one name per class")
    size = min(max(4.0, 0.45 * classes + 2.0), 20.0)
    figure = _figure(size + 1.0, size)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", interpolation="nearest")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    axes.set_xticks(range(classes), names, rotation=45 if classes > 10 else 0, ha="right" if classes > 10 else "center")
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    if classes <= 30:  # beyond that the numbers no longer fit their cells
        integral = np.issubdtype(matrix.dtype, np.integer) or np.all(np.mod(matrix, 1) == 0)
        threshold = (np.nanmax(matrix) + np.nanmin(matrix)) / 2 if matrix.size else 0
        for row in range(classes):
            for column in range(classes):
                value = matrix[row, column]
                axes.text(column, row, f"{int(value)}" if integral else f"{value:.2f}",
                          ha="center", va="center", fontsize=max(5, 10 - classes // 5),
                          color="white" if value > threshold else "black")
    figure.tight_layout()
    return _save(figure, path)


def image_grid(images, ncols: int = 8, pad: int = 1, fill: float = np.nan) -> np.ndarray:
    """Tiles (n, h, w) or (n, h, w, channels) images into one (rows*(h+pad)-pad, ...) array.

    Cells without an image and the padding between cells hold `fill`.
    """
    images = np.asarray(images, dtype=np.float32)
    count, height, width = images.shape[:3]
    columns = max(1, min(ncols, count))
    rows = math.ceil(count / columns)
    grid = np.full((rows * (height + pad) - pad, columns * (width + pad) - pad, *images.shape[3:]),
                   fill, dtype=np.float32)
    for index in range(count):
        top, left = (index // columns) * (height + pad), (index % columns) * (width + pad)
        grid[top:top + height, left:left + width] = images[index]
    return grid


def plot_images(images, path: str | os.PathLike, ncols: int = 8, title: str | None = None,
                cmap: str = "gray") -> Path:
    """Writes a grid of images to `path` (PNG), e.g. a VAE's samples from the prior.

    Grey images share one colour scale (the min and max over all of them), so
    their brightness compares; RGB floats are clipped to [0, 1].

    Args:
      images: (n, height, width), (n, height, width, 1) or (n, height, width, 3).
      path: the PNG to write (folders created).
      ncols: images per row.
      title: optional figure title.
      cmap: the matplotlib colour map of grey images.

    Returns:
      `path` as a Path.

    Raises:
      ValueError: `images` has another shape, or ncols < 1.
    """
    images = np.asarray(images)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if not (images.ndim == 3 or images.ndim == 4 and images.shape[-1] == 3) or images.shape[0] == 0:
        raise ValueError(f"plot_images: expected images (n, height, width) or (n, height, width, 1 or 3), "
                         f"got shape {images.shape}")
    if ncols < 1:
        raise ValueError(f"plot_images: ncols must be at least 1, got {ncols}")
    rgb = images.ndim == 4
    if rgb and np.issubdtype(images.dtype, np.floating):
        images = np.clip(images, 0.0, 1.0)
    elif rgb:
        images = images.astype(np.float32) / 255.0
    grid = image_grid(images, ncols, fill=1.0 if rgb else np.nan)
    columns = max(1, min(ncols, images.shape[0]))
    rows = math.ceil(images.shape[0] / columns)
    cell = 1.0 if max(images.shape[1:3]) <= 64 else 2.0
    figure = _figure(columns * cell, rows * cell + (0.4 if title else 0.0))
    axes = figure.add_axes((0, 0, 1, 1 if not title else rows * cell / (rows * cell + 0.4)))
    if rgb:
        axes.imshow(grid, interpolation="nearest")
    else:
        finite = grid[np.isfinite(grid)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        axes.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest", vmin=low, vmax=high)
    axes.set_axis_off()
    if title:
        figure.suptitle(title, y=0.99, va="top")
    return _save(figure, path)


MAX_ATTRIBUTION_PANELS = 16  # inputs per attribution figure: beyond that the panels are too small to read


def plot_attributions(inputs, attributions, path: str | os.PathLike, titles=None, title: str | None = None,
                      ncols: int = 4) -> Path:
    """Writes inputs with their attributions to `path` (PNG), one panel per input.

    1-D signals: the signal on top, its attribution as bars under it on the same
    x axis (red pushes the explained output up, blue down). Images: the image
    in grey, the attribution as a red/blue heat map over it, colour scale
    symmetric about 0 per image; the channels of an (h, w, c) image are averaged
    for the grey image and summed for the heat map (a pixel's total).

    Args:
      inputs: (n, length) signals, or (n, height, width) / (n, height, width, channels) images.
      attributions: the same shape: one attribution per input feature (fdl.attribution).
      path: the PNG to write (folders created).
      titles: optional panel titles, one per input.
      title: optional figure title.
      ncols: panels per row.

    Returns:
      `path` as a Path.

    Raises:
      ValueError: the shapes differ or are neither signals nor images, no inputs or
        more than MAX_ATTRIBUTION_PANELS, titles of another length, or ncols < 1.
    """
    inputs, attributions = np.asarray(inputs, np.float32), np.asarray(attributions, np.float32)
    _check_attribution_panels(inputs, attributions, titles, ncols)
    count = inputs.shape[0]
    columns = min(ncols, count)
    rows = math.ceil(count / columns)
    signals = inputs.ndim == 2
    figure = _figure(3.2 * columns, (2.6 if signals else 2.8) * rows + (0.4 if title else 0.0))
    grid = figure.add_gridspec(rows, columns)
    for index in range(count):
        row, column = divmod(index, columns)
        name = None if titles is None else str(titles[index])
        if signals:
            _signal_panel(figure, grid[row, column].subgridspec(2, 1, height_ratios=[2, 1], hspace=0.08),
                          inputs[index], attributions[index], name)
        else:
            _image_panel(figure.add_subplot(grid[row, column]), inputs[index], attributions[index], name)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _check_attribution_panels(inputs, attributions, titles, ncols) -> None:
    if inputs.shape != attributions.shape:
        raise ValueError(f"plot_attributions: inputs {inputs.shape} and attributions {attributions.shape} differ "
                         "— give one attribution per input feature")
    if inputs.ndim not in (2, 3, 4):
        raise ValueError(f"plot_attributions: expected signals (n, length) or images (n, height, width[, "
                         f"channels]), got shape {inputs.shape}")
    if not 1 <= inputs.shape[0] <= MAX_ATTRIBUTION_PANELS:
        raise ValueError(f"plot_attributions: {inputs.shape[0]} inputs, expected 1 to {MAX_ATTRIBUTION_PANELS} "
                         "per figure — plot a slice, e.g. inputs[:16]")
    if titles is not None and len(titles) != inputs.shape[0]:
        raise ValueError(f"plot_attributions: {len(titles)} titles for {inputs.shape[0]} inputs — give one each")
    if ncols < 1:
        raise ValueError(f"plot_attributions: ncols must be at least 1, got {ncols}")


def _signal_panel(figure, cell, signal, attribution, name) -> None:
    top = figure.add_subplot(cell[0])
    positions = np.arange(signal.shape[0])
    top.plot(positions, signal, color="black", linewidth=1.0)
    top.tick_params(labelbottom=False, labelsize=7)
    if name:
        top.set_title(name, fontsize=9)
    bottom = figure.add_subplot(cell[1], sharex=top)
    bottom.bar(positions, attribution, width=0.9, color=np.where(attribution >= 0, "tab:red", "tab:blue"))
    bottom.axhline(0.0, color="grey", linewidth=0.5)
    bottom.tick_params(labelsize=7)


def _image_panel(axes, image, attribution, name) -> None:
    if image.ndim == 3:
        image, attribution = image.mean(axis=-1), attribution.sum(axis=-1)
    axes.imshow(image, cmap="gray", interpolation="nearest")
    limit = float(np.max(np.abs(attribution))) or 1.0
    axes.imshow(attribution, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=0.6, interpolation="nearest")
    axes.set_axis_off()
    if name:
        axes.set_title(name, fontsize=9)
