"""`fdl.save` / `fdl.load`: a trained model as a self-describing folder, for library users.

    fdl.save({"name": "mnist1d_mlp", "args": {"hidden": [16]}}, state, "models/mlp", input_shape=(40,))
    fdl.save(fdl.load_run("runs/mnist1d_mlp-20261125-101500"), "models/mlp")  # a run: its config's spec
    saved = fdl.load("models/mlp")
    logits = saved.predict(x)        # raw inputs (n, 40): the saved preprocessing applied, eval mode
    ys, _ = fdl.batched(saved.model)(saved.params, saved.model_state, x)   # or the parts

The folder needs no config file and no code but fdl's (and, for a `target` spec, the
module it names):

    PATH/model.json   {"format": "fdl.saved_model", "version": 1,
                       "model": the layer spec in the config's model-section form:
                                {"name": "mnist1d_mlp", "args": {...}} | {"layers": [...]}
                                | {"target": "pkg.module.make", "args": {...}},
                       "input_shape": [40], "input_dtype": "float32",
                       "preprocessing": "standardize" | "min_max" | null,
                       "class_names": [...] | null, "config_sha256": ... | null, "fdl_version": ...}
    PATH/weights/     an fdl checkpoint (`fdl.train.save_checkpoint`: orbax, a manifest of every
                      array's path, shape and CRC-32) of {"params", "model_state", and with
                      preprocessing "preprocessing": its fitted statistics}

`load` rebuilds the model from the spec (`fdl.config.build_model`), works out the shape of
every array it needs without allocating them, and reads the weights against those: a folder
whose spec and weights disagree names the first differing array and both shapes.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from omegaconf import OmegaConf

from fdl.config import ConfigError, RunConfig, build_model, merge_config
from fdl.data import transform
from fdl.io import to_python
from fdl.nn import Layer
from fdl.records import config_sha256, package_version, write_text
from fdl.runs.loaded import STATS, LoadedRun
from fdl.train import Evaluator, load_checkpoint, save_checkpoint
from fdl.train.checks import check_data, check_model_input

__all__ = ["SavedModel", "save", "load", "as_saved_model", "from_run", "model_spec", "input_dtype_of",
           "MODEL_FILE", "WEIGHTS_DIR"]

MODEL_FILE, WEIGHTS_DIR = "model.json", "weights"
FORMAT, VERSION = "fdl.saved_model", 1
INPUT_DTYPES = ("float32", "int32")


@dataclasses.dataclass(frozen=True, eq=False)
class SavedModel:
    """A model with everything it needs to predict: what `fdl.load` returns and `fdl.save` writes.

    Attributes:
      model: the Layer.
      params, model_state: its trained arrays (nested dicts, as `model.init` builds them).
      input_shape: the per-example input shape, e.g. (40,).
      input_dtype: "float32" (features) or "int32" (token ids).
      preprocessing: (method, fitted statistics) applied to raw inputs first, or None.
      class_names: a name per class for a classifier, or None.
      spec: the model section it was built from (`model_spec`); None for a Layer given as code.
      config_sha256: the hash of the run's config.yaml it came from, or None.
    """

    model: Layer
    params: Any
    model_state: Any
    input_shape: tuple
    input_dtype: str = "float32"
    preprocessing: tuple[str, NamedTuple] | None = None
    class_names: tuple[str, ...] | None = None
    spec: dict | None = None
    config_sha256: str | None = None

    @functools.cached_property
    def _evaluator(self) -> Evaluator:
        return Evaluator(self.model)

    def preprocess(self, x) -> np.ndarray:
        """Raw inputs as the model saw them in training: the fitted `preprocessing` applied."""
        return x if self.preprocessing is None else transform(*self.preprocessing, np.asarray(x, np.float32))

    def predict(self, x) -> np.ndarray:
        """Model outputs (logits for classifiers) for raw inputs x: (n, *input_shape), eval mode.

        Raises:
          ValueError: x is not (n, *input_shape) with n >= 1, or holds NaN or inf.
        """
        x = np.asarray(x)
        check_data("predict", self.model, x, expected_shape=self.input_shape, params=self.params)
        return self._evaluator.predict(self.params, self.model_state, self.preprocess(x))


def model_spec(config) -> dict:
    """A run config's `model:` section as a plain dict, its unset keys left out.

    Example:
      >>> model_spec(fdl.config.load_config("configs/mnist1d_mlp.yaml"))
      {'name': 'mnist1d_mlp', 'args': {...}}
    """
    section = OmegaConf.to_container(config.model, resolve=True)
    return {key: value for key, value in section.items() if value is not None and value != {}}


def input_dtype_of(x) -> str:
    """The dtype an export or saved model takes for data like `x`: "int32" for integers, else "float32".

    Raises:
      ValueError: `x` is a dict of arrays (a model with several inputs), which fdl cannot save or export.
    """
    if isinstance(x, Mapping):
        raise ValueError(f"inputs: this model takes a dict of arrays ({', '.join(map(str, x))}); saving and "
                         "exporting take models of one input array")
    return "int32" if np.issubdtype(np.asarray(x).dtype, np.integer) else "float32"


def from_run(run: LoadedRun) -> SavedModel:
    """A loaded run's model, state, input shape, preprocessing and class names, with its config's spec.

    Raises:
      ValueError: the run trains several models (a GAN) or takes a dict of inputs.
    """
    if isinstance(run.model, dict):
        raise ValueError(f"run {str(run.run_dir.path)!r}: it trains several models ({', '.join(sorted(run.model))}) "
                         "— fdl saves and exports one model: pass that Layer and a TrainState of its own params")
    dataset = run.arguments.data.dataset
    input_shape = run.require_one_input("fdl.save and fdl export")
    return SavedModel(run.model, run.state.params, run.state.model_state, input_shape,
                      input_dtype_of(dataset.train.x), run.preprocessing,
                      None if dataset.class_names is None else tuple(map(str, dataset.class_names)),
                      model_spec(run.config), config_sha256(run.run_dir.config_text()))


def as_saved_model(source, state=None, *, role: str, input_shape=None, preprocessing=None, class_names=None,
                   input_dtype: str | None = None) -> SavedModel:
    """`source` as a SavedModel: a LoadedRun or SavedModel as it is, a model spec dict or a Layer with its state.

    Args:
      source: a LoadedRun or a SavedModel (they bring everything else), a config's model
        section as a dict (`model_spec`), or a Layer.
      state: the TrainState of a spec or a Layer (its params and model_state).
      role: the caller, in messages ("fdl.save", "fdl.export").
      input_shape, preprocessing, class_names, input_dtype: of a spec or a Layer (see `save`).

    Raises:
      TypeError: another kind of source; a run given a state, shape, ... of its own; no
        input_shape; a state without params and model_state.
      ConfigError: a spec that does not build (the key path).
      ValueError: the state's params do not belong to the model at input_shape (names the
        array), preprocessing statistics of another shape or method, class_names of
        another length than the model's outputs, an unknown input_dtype.
    """
    given = {"state": state, "input_shape": input_shape, "preprocessing": preprocessing,
             "class_names": class_names, "input_dtype": input_dtype}
    if isinstance(source, (LoadedRun, SavedModel)):
        extra = [name for name, value in given.items() if value is not None]
        if extra:
            raise TypeError(f"{role}: a {type(source).__name__} brings its own state, input shape, preprocessing "
                            f"and class names — drop {', '.join(extra)}")
        return from_run(source) if isinstance(source, LoadedRun) else source
    spec = None
    if isinstance(source, Mapping):
        spec, source = dict(source), _build(source, f"{role}: model_spec")
    if not isinstance(source, Layer):
        raise TypeError(f"{role}: expected a model spec dict, a Layer, a LoadedRun or a SavedModel, got "
                        f"{type(source).__name__}")
    if input_shape is None:
        raise TypeError(f"{role}: input_shape is missing — give the per-example shape, e.g. input_shape=(40,)")
    if not (hasattr(state, "params") and hasattr(state, "model_state")):
        raise TypeError(f"{role}: state must be a TrainState (with params and model_state), got "
                        f"{type(state).__name__}")
    input_dtype = input_dtype or "float32"
    if input_dtype not in INPUT_DTYPES:
        raise ValueError(f"{role}: input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {input_dtype!r}")
    input_shape = tuple(int(d) for d in input_shape)
    output_shape = check_model_input(role, source, input_shape, params=state.params)
    if class_names is not None:
        class_names = tuple(map(str, class_names))
        if tuple(output_shape) != (len(class_names),):
            raise ValueError(f"{role}: {len(class_names)} class_names, but the model's outputs have shape "
                             f"{output_shape} — give one name per output")
    return SavedModel(source, state.params, state.model_state, input_shape, input_dtype,
                      _checked_preprocessing(preprocessing, input_shape, role), class_names, spec)


def _checked_preprocessing(preprocessing, input_shape: tuple, role: str):
    """(method, stats NamedTuple) of `preprocessing` given as (method, stats or dict of arrays), or None."""
    if preprocessing is None:
        return None
    if not (isinstance(preprocessing, tuple) and len(preprocessing) == 2 and isinstance(preprocessing[0], str)):
        raise TypeError(f"{role}: preprocessing must be (method, statistics), e.g. run.preprocessing, got "
                        f"{type(preprocessing).__name__}")
    method, stats = preprocessing
    if method not in STATS:
        raise ValueError(f"{role}: preprocessing method {method!r} — expected one of {', '.join(STATS)}")
    fields = {name: np.asarray(value, np.float32) for name, value in
              (stats._asdict() if hasattr(stats, "_asdict") else dict(stats)).items()}
    wanted = {name: input_shape for name in STATS[method]._fields}
    shapes = {name: value.shape for name, value in fields.items()}
    if shapes != wanted:
        raise ValueError(f"{role}: preprocessing {method} takes statistics {wanted}, got {shapes} — pass "
                         "run.preprocessing, or what fdl.data.preprocess fitted")
    return method, STATS[method](**fields)


def _build(spec: Mapping, where: str) -> Layer:
    """The Layer of a model-section spec, checked as a config's `model:` section is."""
    try:
        return build_model(merge_config(OmegaConf.structured(RunConfig), {"model": dict(spec)}).model)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def save(model_spec, state=None, path=None, *, input_shape=None, preprocessing=None, class_names=None,
         input_dtype: str | None = None) -> Path:
    """Writes a model, its state, input shape, preprocessing and class names to the folder `path`.

    Two forms:

        fdl.save({"layers": [{"Dense": {"features": 10}}]}, state, "models/linear", input_shape=(40,))
        fdl.save(run, "models/mlp")   # a LoadedRun (spec from its config) or a SavedModel (a copy)

    Args:
      model_spec: the model section of a config as a dict — {"name": ..., "args": {...}},
        {"layers": [...]} or {"target": "module.function", "args": {...}} — or a LoadedRun /
        SavedModel, which bring all the rest.
      state: the TrainState (its params and model_state are saved).
      path: the folder; created, or replaced when it holds an earlier `fdl.save`.
      input_shape: the per-example input shape, e.g. (40,).
      preprocessing: (method, fitted statistics), e.g. `run.preprocessing`, applied to raw
        inputs by `SavedModel.predict` and folded into exports.
      class_names: one name per output of a classifier.
      input_dtype: "float32" (features, the default) or "int32" (token ids).

    Returns:
      The folder's path.

    Raises:
      TypeError: a Layer for the spec (fdl.save stores the spec, not code), a missing
        state / path / input_shape, or a run given a state of its own.
      ConfigError: a spec that does not build (the key path).
      ValueError: state, preprocessing or class_names that do not fit the model (see
        `as_saved_model`); a folder that holds other files.
    """
    if isinstance(model_spec, (LoadedRun, SavedModel)) and path is None and isinstance(state, (str, os.PathLike)):
        path, state = state, None  # save(run, path)
    saved = as_saved_model(model_spec, state, role="fdl.save", input_shape=input_shape,
                           preprocessing=preprocessing, class_names=class_names, input_dtype=input_dtype)
    if path is None:
        raise TypeError("fdl.save: path is missing — the folder to write, e.g. fdl.save(spec, state, 'models/mlp', ...)")
    return _write(saved, Path(path))


def _write(saved: SavedModel, folder: Path) -> Path:
    if saved.spec is None:
        raise TypeError("fdl.save: got a Layer, but fdl.save stores the model's spec, not code — give its model "
                        "section as a dict: fdl.save({'name': ..., 'args': {...}}, state, path, input_shape=...)")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / MODEL_FILE).is_file():
        raise ValueError(f"{str(folder)!r}: the folder holds other files — save into a new or empty folder "
                         "(or one an earlier fdl.save wrote)")
    text = json.dumps(to_python(_description(saved)), indent=2) + "\n"  # encoded before any file is touched
    tree = {"params": saved.params, "model_state": saved.model_state}
    if saved.preprocessing is not None:
        tree["preprocessing"] = saved.preprocessing[1]._asdict()
    save_checkpoint(folder / WEIGHTS_DIR, tree)
    write_text(folder / MODEL_FILE, text)  # last: a folder with model.json is complete
    return folder


def _description(saved: SavedModel) -> dict:
    """The content of model.json."""
    return {"format": FORMAT, "version": VERSION, "model": saved.spec, "input_shape": list(saved.input_shape),
            "input_dtype": saved.input_dtype,
            "preprocessing": None if saved.preprocessing is None else saved.preprocessing[0],
            "class_names": None if saved.class_names is None else list(saved.class_names),
            "config_sha256": saved.config_sha256, "fdl_version": package_version("fdl")}


def load(path: str | os.PathLike) -> SavedModel:
    """Reads a folder written by `fdl.save`: rebuilds the model from its spec and checks every array.

    Example:
      >>> folder = save({"name": "mlp", "args": {"hidden": [32]}}, state, "models/mlp", input_shape=(40,))
      >>> saved = load(folder)
      >>> saved.predict(x[:7]).shape, saved.input_shape, saved.spec
      ((7, 10), (40,), {'name': 'mlp', 'args': {'hidden': [32]}})

    Raises:
      FileNotFoundError: the folder, its model.json or its weights/ is missing (names it).
      ValueError: model.json is not JSON or lacks a field (names the file and field); a
        ConfigError when its spec does not build; a CheckpointError when weights/ is
        damaged or an array's shape differs from the rebuilt model's (names the array and
        both shapes).
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"saved model {str(folder)!r} does not exist — pass a folder written by fdl.save")
    where = folder / MODEL_FILE
    description = _read_description(where)
    model = _build(description["model"], str(where))
    input_shape = tuple(description["input_shape"])
    method = description["preprocessing"]
    check_model_input(f"{where}: input_shape", model, input_shape)
    if not (folder / WEIGHTS_DIR).is_dir():
        raise FileNotFoundError(f"{folder / WEIGHTS_DIR}: missing — restore it from a copy of the folder, or save "
                                "the model again")
    tree, _ = load_checkpoint(folder / WEIGHTS_DIR, _template(model, input_shape, method))
    tree = jax.device_put(tree)
    preprocessing = None if method is None else (method, STATS[method](**jax.device_get(tree["preprocessing"])))
    class_names = description.get("class_names")
    return SavedModel(model, tree["params"], tree["model_state"], input_shape, description["input_dtype"],
                      preprocessing, None if class_names is None else tuple(class_names),
                      description["model"], description.get("config_sha256"))


_FIELDS = {"format": str, "model": dict, "input_shape": list, "input_dtype": str}


def _read_description(where: Path) -> dict:
    """model.json, checked: its format, the fields `load` needs and their types."""
    if not where.is_file():
        raise FileNotFoundError(f"{where}: missing — not a folder written by fdl.save (or an unfinished one: "
                                "save the model again)")
    try:
        description = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: not JSON ({error}) — restore it, or save the model again") from None
    if not isinstance(description, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(description).__name__} — save the model again")
    for field, kind in _FIELDS.items():
        if not isinstance(description.get(field), kind):
            raise ValueError(f"{where}: field {field!r} is missing or not a {kind.__name__} — save the model again")
    if description["format"] != FORMAT or description.get("version") != VERSION:
        raise ValueError(f"{where}: format {description['format']!r} version {description.get('version')!r}, "
                         f"this fdl reads {FORMAT!r} version {VERSION} — save the model again with this fdl")
    method = description.get("preprocessing")
    if method is not None and method not in STATS:
        raise ValueError(f"{where}: preprocessing {method!r} — expected one of {', '.join(STATS)} or null")
    if description["input_dtype"] not in INPUT_DTYPES:
        raise ValueError(f"{where}: input_dtype {description['input_dtype']!r} — expected one of "
                         f"{', '.join(INPUT_DTYPES)}")
    return description


def _template(model: Layer, input_shape: tuple, method: str | None) -> dict:
    """Zeros shaped like the weights `model` builds for `input_shape` (worked out abstractly)."""
    params, model_state = jax.eval_shape(lambda: model.init(jax.random.key(0), input_shape)[1:])
    tree = {"params": params, "model_state": model_state}
    if method is not None:
        tree["preprocessing"] = {name: jax.ShapeDtypeStruct(input_shape, np.float32) for name in STATS[method]._fields}
    return jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), tree)
