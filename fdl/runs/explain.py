"""`fdl.explain` and `fdl explain`: attributions of a run's (or a model's) outputs for raw inputs.

    run = fdl.load_run("runs/mnist1d_cnn-20261125-101500")
    result = fdl.explain(run, x, method="integrated_gradients", steps=128)
    result.attributions            # (n, 40): one number per input feature, summing to f(x) - f(0)
    result.targets                 # (n,): the class explained, each input's predicted one by default
    written = write_explanation(result, x, "attributions/", method="integrated_gradients")
    written.attributions_path      # attributions/attributions.npy; written.plot_path: attributions.png

The maths is fdl.attribution's (usable without a run directory); this module
brings a run's parts to it: its model in inference mode with the fitted
preprocessing folded into the differentiated function (attributions are with
respect to the raw inputs, in the user's units), its checkpoint's state, its
evaluation batch size, and an `Explainer` kept on the run so repeated calls
compile nothing. Then it writes what the command shows: attributions.npy and a
plot of the first `MAX_ATTRIBUTION_PANELS` inputs.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from fdl.attribution import Explainer, Explanation
from fdl.io import to_python
from fdl.nn.core import Layer
from fdl.records import write_bytes
from fdl.records.plots import MAX_ATTRIBUTION_PANELS, plot_attributions
from fdl.runs.loaded import LoadedRun
from fdl.train.checks import check_data

__all__ = ["explain", "Written", "write_explanation", "explain_to_folder"]

ATTRIBUTIONS_FILE, PLOT_FILE = "attributions.npy", "attributions.png"


def explain(run_or_model, x, *, method: str = "saliency", target=None, state=None, **options) -> Explanation:
    """Per-input attributions of a model's outputs: saliency, integrated gradients or smoothgrad.

    Args:
      run_or_model: a LoadedRun (`fdl.load_run`: its checkpoint, preprocessing and
        compiled programs are used), or an fdl.nn Layer with `state`.
      x: (n, *input_shape) raw inputs.
      method: "saliency", "integrated_gradients" or "smoothgrad" (see fdl.attribution).
      target: None (each input's predicted class: the argmax of its logits), a class
        index, or (n,) class indices.
      state: the TrainState of a bare Layer (not given with a run). A Layer gets a new
        `fdl.attribution.Explainer` per call, compiled again; keep one for repeated calls.
      **options: the method's: integrated_gradients `baseline` (raw units, default 0)
        and `steps` (64); smoothgrad `samples` (50), `noise` (0.15 of each input's
        range) and `seed` (0).

    Returns:
      fdl.attribution.Explanation: `attributions` (n, *input_shape), `targets` (n,),
      `outputs` (n, classes) at x, as numpy arrays.

    Raises:
      ValueError: x of another shape than the model's inputs, or a bad method, target
        or option (the message names it).
      TypeError: run_or_model is neither a run nor a Layer.
    """
    if isinstance(run_or_model, LoadedRun):
        if state is not None:
            raise ValueError("state: a loaded run is explained with its own checkpoint (run.state) — drop "
                             "state=, or load another one with fdl.load_run(run_dir, checkpoint='last')")
        run = run_or_model
        run.require_one_input("fdl explain")
        return run.explainer.explain(run.state.params, run.state.model_state, run.check_inputs(x),
                                          method=method, target=target, **options)
    if isinstance(run_or_model, Layer):
        if state is None:
            raise ValueError("state: explaining a bare model needs its trained state — "
                             "fdl.explain(model, x, state=state)")
        x = np.asarray(x)
        check_data("explain", run_or_model, x, params=state.params)
        return Explainer(run_or_model).explain(state.params, state.model_state, x, method=method, target=target,
                                               **options)
    raise TypeError(f"run_or_model: expected a LoadedRun (fdl.load_run) or an fdl.nn Layer, got "
                    f"{type(run_or_model).__name__}")


class Written(NamedTuple):
    """What `write_explanation` wrote.

    Attributes:
      explanation: the Explanation written.
      attributions_path: the .npy of all attributions, (n, *input_shape) float32.
      plot_path: the PNG of the first `plotted` inputs, or None when the inputs are
        neither signals (length,) nor images (height, width[, channels]).
      plotted: how many inputs the plot shows (at most MAX_ATTRIBUTION_PANELS).
    """

    explanation: Explanation
    attributions_path: Path
    plot_path: Path | None
    plotted: int

    def describe(self) -> str:
        """What was written, in lines for the command: the files, the cap on the plot, the targets."""
        attributions = self.explanation.attributions
        count = len(attributions)
        if self.plot_path is None:
            plot = "no plot: the inputs are neither signals (length,) nor images (height, width[, channels])"
        elif self.plotted < count:
            plot = (f"plot of the first {self.plotted} of {count} inputs (at most {MAX_ATTRIBUTION_PANELS} are "
                    f"drawn; the .npy holds all): {self.plot_path}")
        else:
            plot = f"plot of the {count} inputs: {self.plot_path}"
        return "\n".join([f"attributions {attributions.shape} written to {self.attributions_path}", plot,
                          json.dumps({"targets": to_python(self.explanation.targets[:20])})])


def write_explanation(explanation: Explanation, x, out_dir: str | os.PathLike, *, method: str) -> Written:
    """Writes attributions.npy (atomically) and attributions.png of the first inputs into `out_dir`.

    Args:
      explanation: what `explain` returned for `x`.
      x: (n, *input_shape) the raw inputs explained (the plot draws them).
      out_dir: the folder (created).
      method: the method's name, for the plot's title.
    """
    out_dir = Path(out_dir)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(explanation.attributions, np.float32))
    attributions_path = write_bytes(out_dir / ATTRIBUTIONS_FILE, buffer.getvalue())
    x = np.asarray(x)
    if x.ndim not in (2, 3, 4):
        return Written(explanation, attributions_path, None, 0)
    plotted = min(len(x), MAX_ATTRIBUTION_PANELS)
    titles = [f"input {i}: {_target_name(explanation.targets[i])}" for i in range(plotted)]
    plot_path = plot_attributions(x[:plotted], explanation.attributions[:plotted], out_dir / PLOT_FILE,
                                  titles=titles, title=method.replace("_", " "))
    return Written(explanation, attributions_path, plot_path, plotted)


def _target_name(target) -> str:
    return "the output" if target < 0 else f"class {int(target)}"


def explain_to_folder(run: LoadedRun, x, out_dir: str | os.PathLike | None = None, *, method: str = "saliency",
                      target=None, **options) -> Written:
    """`fdl explain`: the run's attributions for x written to out_dir (default RUN_DIR/explain).

    Args:
      run: the loaded run.
      x: (n, *input_shape) raw inputs, checked (`run.check_inputs`).
      out_dir: the folder for attributions.npy and attributions.png.
      method, target, **options: as in `explain` (options left None take their defaults).
    """
    explanation = explain(run, x, method=method, target=target, **options)
    return write_explanation(explanation, x, run.run_dir.path / "explain" if out_dir is None else out_dir,
                             method=method)
