"""`fdl export`: a trained model as one file that runs without fdl — StableHLO (jax.export) or ONNX.

    fdl export runs/mnist1d_cnn-20261125-101500 --out cnn.export          # StableHLO, any batch size
    fdl export runs/mnist1d_mlp-20261125-101500 --format onnx --out mlp-onnx
    fdl.export("runs/mnist1d_cnn-20261125-101500", out="cnn.export")      # a run directory, a LoadedRun,
    fdl.export(model, state, input_shape=(40,), out="mlp.export")         # a SavedModel, or a Layer + state

What is exported is `predict(x) -> outputs` for raw inputs `x: (batch, *input_shape)`: the
preprocessing fitted at training time (standardize / min_max, `fdl.data.transform`, which traces)
folded in, the model in inference mode (`fdl.batched(model)(params, model_state, x,
train=False)`: dropout off, BatchNorm's running statistics — what `fdl predict` runs), the
weights as constants. `batch="dynamic"` exports a symbolic batch dimension (any size >= 1), an
int a fixed one.

An export is a folder, one format each:

    OUT/model.jaxexport   format stablehlo: `jax.export.Exported.serialize()` — the StableHLO module
                          with its calling convention, lowered for CPU and CUDA
    OUT/model.onnx        format onnx: the ONNX model (opset 23) jax2onnx writes, input "x"; checked
                          when written by running it in onnxruntime against JAX
    OUT/metadata.json     {"format", "file", "batch": "dynamic" | N, "input_name", "input_shape",
                           "input_dtype", "output_shape" (per example),
                           "output_kind": "logits" | "outputs", "num_classes", "class_names",
                           "preprocessing": the method folded in (the export takes raw inputs) | null,
                           "platforms", "config_sha256" (of the run's config.yaml) | null,
                           "versions": {"fdl", "jax", "jax2onnx"}}

Reading one needs jax alone (or onnxruntime), not fdl and not the model's code:

    import json, jax, numpy as np
    metadata = json.load(open("cnn.export/metadata.json"))
    exported = jax.export.deserialize(bytearray(open("cnn.export/model.jaxexport", "rb").read()))
    logits = exported.call(np.load("x.npy").astype(np.float32))          # (n, 10)

`load_export(OUT)` does that (or opens an ONNX export in onnxruntime) and checks the input's
shape first: what `fdl serve` uses.

Coverage, measured on the layer catalogue (tests/nn/rows_*.py, 69 rows; jax 0.10.2, jax2onnx
0.17.1, onnxruntime 1.32, CPU): StableHLO exports all 69 at a dynamic and at a fixed batch.
ONNX takes 61 at a fixed batch and 55 at a dynamic one. jax2onnx has no mapping for a reverse
`lax.scan` (bidirectional LSTM, GRU, 4 rows) nor for ConvTranspose's kernel layout (3 rows); it
cannot pad with a symbolic batch (Conv's im2col implementation, the CPU default: 6 rows, which
export with a fixed batch); and 2D MaxPool with SAME padding converts to a graph onnxruntime
refuses to run. An ONNX export that fails names the layer and the fix.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import numpy as np

from fdl.data import transform
from fdl.io import write_bytes
from fdl.metrics import infer_num_classes
from fdl.nn import Layer, batched, init_child
from fdl.records import package_version, write_json
from fdl.runs.loaded import load_run
from fdl.runs.saved import MODEL_FILE, SavedModel, as_saved_model, load

__all__ = ["export", "load_export", "inference_function", "default_out", "FILES", "METADATA_FILE", "PLATFORMS"]

FILES = {"stablehlo": "model.jaxexport", "onnx": "model.onnx"}
METADATA_FILE = "metadata.json"
PLATFORMS = ("cpu", "cuda")
INPUT_NAME = "x"
ONNX_TOLERANCE = 1e-4  # rtol and atol vs JAX: float32 rounding of another operation order
_PROBE_BATCH = 3       # rows of the check of a dynamic-batch ONNX export


def export(run_or_model, state=None, *, out: str | os.PathLike, format: str = "stablehlo",
           batch: int | str = "dynamic", input_shape=None, preprocessing=None, class_names=None,
           input_dtype: str | None = None) -> Path:
    """Writes a trained model's `predict(x)` as StableHLO or ONNX to the folder `out`.

    Args:
      run_or_model: a run directory (or a folder `fdl.save` wrote), a LoadedRun, a SavedModel,
        a model spec dict, or a Layer (then give `state` and `input_shape`).
      state: the Layer's TrainState.
      out: the export folder (see the module docstring); created, or an export there replaced.
      format: "stablehlo" (jax.export) or "onnx" (jax2onnx; `pip install "fdl[export]"`).
      batch: "dynamic" (a symbolic batch dimension) or a fixed number of rows.
      input_shape: the Layer's per-example input shape, e.g. (40,).
      preprocessing: (method, fitted statistics) to fold in, e.g. `run.preprocessing`.
      class_names: one name per class, written to the metadata.
      input_dtype: "float32" (default) or "int32" (token ids).

    Returns:
      The folder.

    Raises:
      ValueError: an unknown format or batch; a model jax2onnx cannot convert or onnxruntime
        cannot run as jax does, naming the layer (e.g. `serial[1] GRU (params gru_1)`) and the fix;
        a folder that holds other files. The errors of `fdl.load_run` and `as_saved_model`.
      ModuleNotFoundError: format onnx without the export extra.
    """
    if format not in FILES:
        raise ValueError(f"format: expected one of {', '.join(FILES)}, got {format!r}")
    batch = _checked_batch(batch)
    if isinstance(run_or_model, (str, os.PathLike)):
        folder = Path(run_or_model)
        run_or_model = load(folder) if (folder / MODEL_FILE).is_file() else load_run(folder)
    saved = as_saved_model(run_or_model, state, role="fdl.export", input_shape=input_shape,
                           preprocessing=preprocessing, class_names=class_names, input_dtype=input_dtype)
    out = _checked_out(Path(out))
    predict = inference_function(saved)
    spec = jax.ShapeDtypeStruct((_batch_dimension(batch), *saved.input_shape), saved.input_dtype)
    data = _stablehlo(predict, spec) if format == "stablehlo" else _onnx(saved, predict, spec)
    for name in FILES.values():  # the file of an export this one replaces
        (out / name).unlink(missing_ok=True)
    write_bytes(out / FILES[format], data)
    write_json(out / METADATA_FILE, _metadata(saved, format, batch, jax.eval_shape(predict, spec)))
    return out


def default_out(run_dir: str | os.PathLike, format: str) -> Path:
    """Where `fdl export RUN_DIR` writes without --out: RUN_DIR/export/<format>."""
    return Path(run_dir) / "export" / format


def inference_function(saved: SavedModel) -> Callable:
    """`predict(x) -> outputs` of raw inputs x: (batch, *input_shape), pure and traceable.

    The fitted preprocessing is applied first, then the model in eval mode (`fdl.batched`,
    train=False); the weights are constants of the function.
    """
    apply = batched(saved.model)

    def predict(x):
        if saved.preprocessing is not None:
            x = transform(*saved.preprocessing, x)
        return apply(saved.params, saved.model_state, x, train=False)[0]

    return predict


def _checked_batch(batch) -> int | str:
    """"dynamic", or the fixed batch as an int (from an int or a command line's digits)."""
    if batch == "dynamic":
        return batch
    if isinstance(batch, str) and batch.isdigit():
        batch = int(batch)
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch: expected 'dynamic' or a whole number >= 1, got {batch!r}")
    return batch


def _batch_dimension(batch: int | str):
    return jax.export.symbolic_shape("batch")[0] if batch == "dynamic" else batch


def _checked_out(out: Path) -> Path:
    if out.is_dir() and any(out.iterdir()) and not (out / METADATA_FILE).is_file():
        raise ValueError(f"out {str(out)!r}: the folder holds other files — export into a new or empty folder "
                         "(or one an earlier export wrote)")
    return out


def _stablehlo(predict: Callable, spec: jax.ShapeDtypeStruct) -> bytes:
    return bytes(jax.export.export(jax.jit(predict), platforms=PLATFORMS)(spec).serialize())


def _metadata(saved: SavedModel, format: str, batch, output) -> dict:
    """metadata.json of an export whose outputs are `output` (ShapeDtypeStructs with the batch axis)."""
    output_shape = jax.tree.map(lambda leaf: list(leaf.shape[1:]), output)
    single = isinstance(output, jax.ShapeDtypeStruct)
    num_classes = (len(saved.class_names) if saved.class_names is not None else
                   infer_num_classes(tuple(output_shape)) if single else None)
    return {"format": format, "file": FILES[format], "batch": batch,
            "input_name": INPUT_NAME, "input_shape": list(saved.input_shape), "input_dtype": saved.input_dtype,
            "output_shape": output_shape,
            "output_kind": "logits" if single and num_classes and output_shape == [num_classes] else "outputs",
            "num_classes": num_classes,
            "class_names": None if saved.class_names is None else list(saved.class_names),
            "preprocessing": None if saved.preprocessing is None else saved.preprocessing[0],
            "platforms": list(PLATFORMS) if format == "stablehlo" else None,
            "config_sha256": saved.config_sha256,
            "versions": {"fdl": package_version("fdl"), "jax": jax.__version__,
                         "jax2onnx": package_version("jax2onnx") if format == "onnx" else None}}


# ---- ONNX --------------------------------------------------------------------------------

def _onnx(saved: SavedModel, predict: Callable, spec: jax.ShapeDtypeStruct) -> bytes:
    """The checked ONNX model of `predict`; a model that fails is a ValueError naming the layer."""
    data, problem = _onnx_model(predict, [spec], names=True)
    if problem is None:
        return data
    culprit = _culprit(saved, spec.shape[0], problem)
    where = f"model {saved.model.kind}" if culprit is None else culprit.where
    fix = "export it as StableHLO instead (--format stablehlo), which takes every fdl layer"
    if not isinstance(spec.shape[0], int) and problem[0] == _CONVERT:
        fixed = _onnx_model(predict, [jax.ShapeDtypeStruct((_PROBE_BATCH, *spec.shape[1:]), spec.dtype)])[1]
        if fixed is None:
            fix = "export it with a fixed batch (--batch N), or as StableHLO (--format stablehlo)"
    raise ValueError(f"{where}: {problem[0]} ({problem[1]}) — {fix}")


_CONVERT = "jax2onnx cannot convert it to ONNX"
_RUN = "onnxruntime cannot run its ONNX graph"
_DIFFER = "its ONNX graph computes other numbers than JAX"


@functools.cache
def _onnx_tools():
    """(jax2onnx.to_onnx, onnxruntime, jax2onnx's plugin registry), imported on first use."""
    try:
        import onnxruntime
        from jax2onnx import to_onnx
        from jax2onnx.plugins import plugin_system
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(f"format onnx needs {error.name} — pip install \"fdl[export]\"") from None
    return to_onnx, onnxruntime, plugin_system


@contextlib.contextmanager
def _converting(plugin_system):
    """jax2onnx converting quietly, with its plugins for JAX primitives only; both restored after.

    Its first conversion imports every plugin it has, Flax's and Equinox's and their
    examples too, which compile ~70 programs (5-20 s per process). fdl layers are plain
    JAX: the jax/ plugins convert the layer catalogue exactly as the full set does
    (measured), in ~1 s. The registry's flag is put back, so a later conversion of a
    Flax model in the same process imports the rest as usual; another jax2onnx layout is
    left to import what it imports. Its loggers (and onnx_ir's) warn about graphs that
    fail, which fdl reports in one line.
    """
    loggers = [logging.getLogger(name) for name in ("jax2onnx", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    before = getattr(plugin_system, "_already_imported_plugins", None)
    only_jax = before is False and hasattr(plugin_system, "_import_tree")
    if only_jax:
        plugin_system._import_tree(Path(plugin_system.__file__).parent / "jax", "jax2onnx.plugins.jax")
        plugin_system._already_imported_plugins = True
    try:
        yield
    finally:
        if only_jax:
            plugin_system._already_imported_plugins = before
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _onnx_model(function: Callable, specs: list, *, names: bool = False) -> tuple[bytes | None, tuple | None]:
    """(ONNX bytes, None) of `function` at input `specs`, checked; or (None, (what failed, why)).

    Converted by jax2onnx, run by onnxruntime on a probe (`specs` with a dynamic batch
    of 3, normal floats, zero ints) and compared with the jitted function: a graph
    that converts but runs wrong or not at all fails too.
    """
    to_onnx, onnxruntime, plugin_system = _onnx_tools()
    rng = np.random.default_rng(0)
    probe = [rng.normal(size=_probe_shape(s)).astype(s.dtype) if np.issubdtype(s.dtype, np.floating)
             else np.zeros(_probe_shape(s), s.dtype) for s in specs]
    io_names = {"input_names": [INPUT_NAME]} if names else {}  # outputs keep jax2onnx's: an Identity's is x
    try:
        with _converting(plugin_system):
            data = to_onnx(function, inputs=specs, model_name="fdl_model", **io_names).SerializeToString()
    except Exception as error:  # jax2onnx raises what its plugins raise (NotImplementedError, jax shape errors)
        return None, (_CONVERT, _first_line(error))
    finally:
        # jax2onnx traces with jnp functions swapped for its own primitives; a jitted helper
        # traced then (Conv's im2col) keeps that trace in its cache, and every later call of
        # it in this process would fail to compile. Clearing JAX's caches drops those traces.
        jax.clear_caches()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # fatal only: a failing graph is reported here, not logged
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), probe)})
    except Exception as error:  # onnxruntime's Fail, InvalidArgument, NotImplemented, ...
        return None, (_RUN, _first_line(error))
    want = [np.asarray(leaf) for leaf in jax.tree.leaves(jax.jit(function)(*probe))]
    if not all(np.allclose(g, w, rtol=ONNX_TOLERANCE, atol=ONNX_TOLERANCE) for g, w in zip(got, want)):
        worst = max(float(np.max(np.abs(g - w), initial=0.0)) for g, w in zip(got, want))
        return None, (_DIFFER, f"by up to {worst:.3g}")
    return data, None


def _probe_shape(spec: jax.ShapeDtypeStruct) -> tuple:
    return tuple(d if isinstance(d, int) else _PROBE_BATCH for d in spec.shape)


class _Child(NamedTuple):
    """A layer inside a model, as `fdl.nn.init_child` initializes it."""

    where: str          # as a ShapeError names it, with its params keys: "serial[1] GRU (params gru_1)"
    steps: tuple        # ("serial[1]",): combinator[index] from the root
    names: tuple        # ("gru_1",): its params/state keys from the root
    layer: Layer
    input_shape: Any    # per example; a tuple of shapes for several inputs


def _children(model: Layer, input_shape: tuple) -> list[_Child]:
    """Every layer inside `model` with the input shape it gets, in pre-order.

    Read off an abstract `init` (`jax.eval_shape`): combinators initialize each child
    through `fdl.nn.init_child`, whose arguments name it; a profile hook sees those
    calls (fdl.nn keeps no list of a model's children, only these calls).
    """
    found, stack = [], []

    def profile(frame, event, arg):
        del arg
        if frame.f_code is not init_child.__code__:
            return
        if event == "call":
            local = frame.f_locals
            parent = stack[-1] if stack else None
            steps = (*(parent.steps if parent else ()), f"{local['combinator']}[{local['index']}]")
            names = (*(parent.names if parent else ()), local["name"])
            where = f"{'.'.join(steps)} {local['layer'].kind} (params {'/'.join(names)})"
            stack.append(_Child(where, steps, names, local["layer"], local["input_shape"]))
            found.append(stack[-1])
        elif event == "return":
            stack.pop()

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        jax.eval_shape(lambda: model.init(jax.random.key(0), input_shape)[1:])
    finally:
        sys.setprofile(previous)
    return found


def _is_shape(shape) -> bool:
    return isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)


def _culprit(saved: SavedModel, batch_dimension, problem: tuple) -> _Child | None:
    """The deepest layer that, converted alone, fails as the whole model did; None if none does.

    Children are tried in order, and the children of one that fails; a problem is the
    same when its kind is and, for a conversion error, its message too (a child given
    float inputs it cannot take fails to convert otherwise, and is not the culprit;
    onnxruntime's messages name graph nodes, which differ in a smaller graph).
    """
    culprit, level = None, ()
    for child in _children(saved.model, saved.input_shape):
        if child.names[:-1] != level:
            continue
        try:
            params = functools.reduce(lambda tree, name: tree[name], child.names, saved.params)
            model_state = functools.reduce(lambda tree, name: tree[name], child.names, saved.model_state)
        except (KeyError, TypeError):  # a combinator that keys its children otherwise: not tried alone
            continue
        shapes, treedef = jax.tree.flatten(child.input_shape, is_leaf=_is_shape)
        apply = batched(child.layer)

        def function(*xs, params=params, model_state=model_state, treedef=treedef, apply=apply):
            return apply(params, model_state, jax.tree.unflatten(treedef, xs), train=False)[0]

        specs = [jax.ShapeDtypeStruct((batch_dimension, *shape), np.float32) for shape in shapes]
        found = _onnx_model(function, specs)[1]
        if found is not None and found[0] == problem[0] and (found[0] != _CONVERT or found[1] == problem[1]):
            culprit, level = child, child.names
    return culprit


# ---- reading an export back --------------------------------------------------------------

def load_export(path: str | os.PathLike) -> tuple[Callable[[Any], Any], dict]:
    """An export folder's model as `predict(x) -> outputs` (numpy), and its metadata.

    Needs jax (format stablehlo) or onnxruntime (format onnx) and numpy: not the model's
    code. `predict` takes raw inputs (n, *input_shape) — the preprocessing is inside — cast
    to the export's input dtype, and checks their shape first.

    Example:
      >>> folder = export(model, state, input_shape=(40,), out="mlp.export")
      >>> predict, metadata = load_export(folder)
      >>> predict(x[:7]).shape, metadata["batch"], metadata["num_classes"]
      ((7, 10), 'dynamic', 10)

    Raises:
      FileNotFoundError: metadata.json or the model file is missing (names it).
      ValueError: metadata.json is not an export's, or the model file is damaged (names it);
        from `predict`, inputs of another shape than the export takes (one line).
    """
    folder = Path(path)
    metadata = _read_metadata(folder / METADATA_FILE)
    model_file = folder / metadata["file"]
    if not model_file.is_file():
        raise FileNotFoundError(f"{model_file}: missing, but {folder / METADATA_FILE} names it — export the "
                                "model again")
    run = (_stablehlo_runner if metadata["format"] == "stablehlo" else _onnx_runner)(model_file, metadata)

    def predict(x):
        return run(_checked_input(x, metadata))

    return predict, metadata


def _read_metadata(where: Path) -> dict:
    if not where.is_file():
        raise FileNotFoundError(f"{where}: missing — not a folder written by fdl export")
    try:
        metadata = json.loads(where.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{where}: not JSON ({error}) — export the model again") from None
    if not isinstance(metadata, dict) or metadata.get("format") not in FILES or \
            metadata.get("file") != FILES[metadata["format"]]:
        raise ValueError(f"{where}: not the metadata of an fdl export (its format and file must be one of "
                         f"{FILES}) — export the model again")
    return metadata


def _stablehlo_runner(model_file: Path, metadata: dict) -> Callable:
    del metadata
    try:
        exported = jax.export.deserialize(bytearray(model_file.read_bytes()))
    except Exception as error:  # flatbuffers and jax raise what they meet in a damaged file
        raise ValueError(f"{model_file}: not a jax.export serialization ({_first_line(error)}) — export the "
                         "model again") from None
    call = jax.jit(exported.call)  # compiled once per batch size
    return lambda x: jax.tree.map(np.asarray, call(x))


def _onnx_runner(model_file: Path, metadata: dict) -> Callable:
    onnxruntime = _onnx_tools()[1]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: not its notes on unused constants
    try:
        session = onnxruntime.InferenceSession(os.fspath(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime's InvalidProtobuf, Fail, ...
        raise ValueError(f"{model_file}: not an ONNX model onnxruntime can load ({_first_line(error)}) — "
                         "export the model again") from None

    def run(x):
        outputs = session.run(None, {metadata["input_name"]: x})
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    return run


def _checked_input(x, metadata: dict) -> np.ndarray:
    """`x` as the export's input dtype, checked to be (n, *input_shape) with n >= 1 (n = batch if fixed)."""
    x = np.asarray(x, metadata["input_dtype"])
    shape, batch = tuple(metadata["input_shape"]), metadata["batch"]
    wanted = f"({'n' if batch == 'dynamic' else batch}, {', '.join(map(str, shape))})"
    if x.shape[1:] != shape or x.ndim != len(shape) + 1 or x.shape[0] < 1:
        raise ValueError(f"x: shape {x.shape}, this export takes {wanted}" +
                         (" — one example? add a leading axis: x[None]" if x.shape == shape else ""))
    if batch != "dynamic" and x.shape[0] != batch:
        raise ValueError(f"x: {x.shape[0]} rows, this export takes a fixed batch of {batch} — give {batch} rows, "
                         "or export with a dynamic batch (--batch dynamic)")
    return x
