"""Every `>>>` example in fdl's docstrings runs and prints what it says (the standard `doctest`).

One test per docstring, named by the object's qualified name (`fdl.optim.make_schedule`).
Examples may use, without defining them, the names `namespace()` returns: `fdl`, `jax`,
`jnp`, `np`, `nn`, `optax`, a small MNIST-1D-shaped problem (`x, y` of 256 examples of 40
features and 10 classes, `x_val, y_val`, `x_test, y_test` of 64, and the same as `train`,
`val`, `test` Splits), a `model` for it (40-32-10 MLP), an `optimizer` and its `state`.
Each example runs in a fresh temporary working directory holding the repository's
`configs/` and four tiny MNIST IDX files in `data/mnist/`, so whatever it writes (`runs/...`,
`x.npy`, checkpoints) lands there. The README's Python blocks run in test_readme.py.
"""
import collections
import doctest
import functools
import importlib
import importlib.util
import json
import pathlib
import pkgutil
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

import fdl

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
PROMPT = re.compile(r"^\s*>>>( |$)", re.M)
FDL_PATH = re.compile(r"(?<![\w.])fdl(?:\.[A-Za-z_]\w*)+")
IMPORT = re.compile(r"^\s*(?:from|import)\s.*$", re.M)  # `from fdl.a import b` imports fdl.a itself

# The optional packages, by the extra that installs them.
EXTRAS = {"optuna": "sweep", "psycopg2": "sweep", "matplotlib": "records", "tensorboardX": "records"}
# Examples that use an extra although their module imports without it (run directories
# write plots and TensorBoard files by default; a sweep plots its results).
NEEDS = {"fdl.records": ("matplotlib", "tensorboardX"),
         "fdl.records.recorder.RunRecorder": ("matplotlib", "tensorboardX"),
         "fdl.records.tensorboard.TensorBoardLogger": ("tensorboardX",),
         "fdl.runs.loaded": ("matplotlib", "tensorboardX"),
         "fdl.runs.sweep": ("optuna", "matplotlib")}
# Examples that show the intended use but fail today because of a bug in the library; strict,
# so the fix turns them into a failure that says to delete the entry.
KNOWN_BUGS: dict[str, str] = {}  # qualified name -> the bug an example shows (strict xfail)


def _install_hint(package: str) -> str:
    return f"needs {package}: pip install 'fdl[{EXTRAS[package]}]'"


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[package] is None, i.e. blocked
        return False


def _modules():
    """(module, None) for fdl and each of its modules, or (name, reason) when an extra it needs is missing."""
    found = [(fdl, None)]
    for info in sorted(pkgutil.walk_packages(fdl.__path__, "fdl."), key=lambda info: info.name):
        if info.name.rsplit(".", 1)[-1] == "__main__":
            continue  # importing it would run the command
        try:
            found.append((importlib.import_module(info.name), None))
        except ModuleNotFoundError as error:
            if error.name not in EXTRAS:
                raise
            found.append((info.name, _install_hint(error.name)))
    return found


def _docstring_examples():
    """pytest params, one per docstring with examples; a docstring two objects share runs once."""
    finder, params, seen = doctest.DocTestFinder(), [], set()
    for module, reason in _modules():
        if reason is not None:
            params.append(pytest.param(None, id=module, marks=pytest.mark.skip(reason=reason)))
            continue
        tests = [test for test in finder.find(module, module.__name__, globs={"__name__": module.__name__})
                 if test.examples]
        # Public names first: `Conv` carries `_conv`'s docstring and should be the one named.
        for test in sorted(tests, key=lambda test: ("._" in test.name, test.name)):
            if (test.filename, test.docstring) in seen:
                continue
            seen.add((test.filename, test.docstring))
            marks = []
            missing = [p for p in NEEDS.get(test.name, ()) if not _installed(p)]
            if missing:
                marks.append(pytest.mark.skip(reason=_install_hint(missing[0])))
            if test.name in KNOWN_BUGS:
                marks.append(pytest.mark.xfail(reason=KNOWN_BUGS[test.name], strict=True))
            params.append(pytest.param(test, id=test.name, marks=marks))
    return params


EXAMPLES = _docstring_examples()


@functools.cache
def namespace() -> dict:
    """What the examples use without defining it; built once, and no example mutates it."""
    import jax
    import jax.numpy as jnp
    import optax

    rng = np.random.default_rng(0)

    def split(n):
        return rng.normal(size=(n, 40)).astype(np.float32), rng.integers(0, 10, n).astype(np.int32)

    (x, y), (x_val, y_val), (x_test, y_test) = split(256), split(64), split(64)
    model = fdl.nn.models.mlp((32,))
    optimizer = fdl.optim.make_optimizer("adam", learning_rate=1e-3)
    return dict(fdl=fdl, jax=jax, jnp=jnp, np=np, nn=fdl.nn, optax=optax,
                model=model, optimizer=optimizer, state=fdl.init_train_state(model, (40,), optimizer, 0),
                x=x, y=y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
                train=fdl.data.Split(x, y), val=fdl.data.Split(x_val, y_val),
                test=fdl.data.Split(x_test, y_test))


def _idx_bytes(array: np.ndarray) -> bytes:
    """uint8 `array` as an IDX file: two zero bytes, type 0x08, rank, big-endian dims, values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    """Four tiny IDX files in MNIST's layout (fdl never downloads MNIST)."""
    directory = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    for stem, shape in [("train-images-idx3-ubyte", (20, 28, 28)), ("train-labels-idx1-ubyte", (20,)),
                        ("t10k-images-idx3-ubyte", (10, 28, 28)), ("t10k-labels-idx1-ubyte", (10,))]:
        high = 10 if "labels" in stem else 256
        (directory / stem).write_bytes(_idx_bytes(rng.integers(0, high, shape, dtype=np.uint8)))
    return directory


@pytest.fixture
def workspace(tmp_path, monkeypatch, mnist_dir):
    """A fresh working directory holding `configs/` and `data/mnist/`."""
    (tmp_path / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist").symlink_to(mnist_dir, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("example", EXAMPLES)
def test_docstring_example(example, workspace):
    # The module's own names (as `python -m doctest` sees them), then the shared objects.
    globs = {**vars(importlib.import_module(example.globs["__name__"])), **namespace()}
    test = doctest.DocTest(example.examples, globs, example.name, example.filename, example.lineno,
                           example.docstring)
    runner, report = doctest.DocTestRunner(optionflags=OPTIONS), []
    runner.run(test, out=report.append)
    assert not runner.failures, "".join(report)


def _collected():
    return [param.values[0] for param in EXAMPLES if param.values[0] is not None]


def test_every_example_in_the_sources_is_collected():
    """No `>>>` line escapes collection (say, in a docstring the finder cannot reach)."""
    skipped = [param.id.replace(".", "/") for param in EXAMPLES if param.values[0] is None]
    in_sources = {}
    for path in sorted((ROOT / "fdl").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if (count := len(PROMPT.findall(path.read_text(encoding="utf-8")))) and \
                not any(name.startswith(prefix) for prefix in skipped):
            in_sources[name] = count
    collected = collections.Counter()
    for test in _collected():
        collected[str(pathlib.Path(test.filename).resolve().relative_to(ROOT))] += len(test.examples)
    assert dict(collected) == in_sources


def test_the_names_examples_use_exist_after_a_plain_import_fdl():
    """`fdl.a.b` in an example resolves in a fresh interpreter, not only because this file imported fdl.a.

    The examples above run after every module of fdl was imported, which would hide an
    attribute path a user's `import fdl` does not provide.
    """
    paths = sorted({path for test in _collected() for example in test.examples
                    for path in FDL_PATH.findall(IMPORT.sub("", example.source))})
    script = ("import functools, json, sys, fdl\n"
              "def resolves(path):\n"
              "    try:\n"
              "        functools.reduce(getattr, path.split('.')[1:], fdl)\n"
              "        return True\n"
              "    except AttributeError:\n"
              "        return False\n"
              "print(json.dumps([p for p in json.loads(sys.argv[1]) if not resolves(p)]))\n")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(paths)], capture_output=True,
                          text=True, check=True, cwd=ROOT)
    assert paths and json.loads(done.stdout) == []
