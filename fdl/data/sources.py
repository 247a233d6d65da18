"""Dataset sources: built-in datasets by name, and user files or arrays.

`load(name, path=None, **kwargs)` is the one entry point a config uses:

    >>> ds = load("mnist1d")                       # generated once, then cached
    >>> ds = load("mnist", path="data/mnist")      # four IDX files, never downloaded
    >>> np.savez("my_data.npz", x=np.zeros((6, 3)), y=np.arange(6) % 2)
    >>> ds = load("npz", path="my_data.npz")       # see `load_npz`
    >>> ds.train.x.shape, ds.num_classes
    ((6, 3), 2)
    >>> _ = open("notes.txt", "w").write("hello world " * 20)
    >>> load("text", path="notes.txt", context=16).train.x["tokens"].shape  # see `load_text`
    (13, 17)

Every source validates what it returns (`fdl.data.validate`): features are
float32, class labels int32, values finite. Nothing here downloads: MNIST and
Fashion-MNIST are read from files the user already has, and mnist1d is
generated locally by the `mnist1d` package and cached as an .npz in
`cache_dir()`.
"""
import gzip
import io
import hashlib
import numbers
import os
import random
import struct
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fdl.data.dataset import Dataset, Split
from fdl.errors import did_you_mean
from fdl.io import write_bytes
from fdl.data.validate import validate_dataset

__all__ = ["load", "LOADERS", "load_mnist1d", "load_npz", "load_csv", "load_text", "read_text_bytes",
           "text_windows", "from_arrays", "read_idx", "cache_dir", "IDX_FILES", "MNIST1D_CACHE_FILE", "DIGIT_NAMES",
           "FASHION_MNIST_CLASS_NAMES"]

DIGIT_NAMES = tuple(str(digit) for digit in range(10))
FASHION_MNIST_CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

# ---------------------------------------------------------------------------
# Arrays and files chosen by the user


def from_arrays(x, y=None, *, x_val=None, y_val=None, x_test=None, y_test=None,
                num_classes: int | None = None, class_names=None,
                name: str = "arrays") -> Dataset:
    """Builds a validated `Dataset` from arrays.

    Args:
        x: (n, *feature_shape) real-valued training features, or a dict of
            arrays with n rows each (dtypes are kept, every leaf needs the same
            n — checked here): without y, examples an objective reads by name;
            with y, a model's dict of inputs (the other splits give the same keys).
        y: (n,) integer class labels, (n, ...) float regression targets, or None.
        x_val, y_val: Optional validation split, same layout as x, y.
        x_test, y_test: Optional test split, same layout as x, y.
        num_classes: Number of classes. When None, integer (or bool) labels mean
            classification with 1 + the largest label over all splits, and
            float labels mean regression.
        class_names: Optional name per class.
        name: Dataset name used in error messages.

    Returns:
        A `Dataset` with float32 features and int32 labels (or float32 targets).

    Raises:
        ValueError: a label array without its features, or any check of
            `fdl.data.validate` (message names the split, array and index).
    """
    given = {"train": (x, y), "val": (x_val, y_val), "test": (x_test, y_test)}
    for split_name, (features, labels) in given.items():
        if features is None and labels is not None:
            raise ValueError(f"dataset {name!r}: y_{split_name} given without x_{split_name}")
    splits = {split_name: Split(_as_arrays(features), None if labels is None else np.asarray(labels))
              for split_name, (features, labels) in given.items() if features is not None}
    if num_classes is None:
        num_classes = _infer_num_classes({name: split.y for name, split in splits.items()})
    dataset = Dataset(name=name, num_classes=num_classes,
                      class_names=None if class_names is None else tuple(class_names), **splits)
    return validate_dataset(dataset)


def _as_arrays(features):
    """numpy arrays: `features` itself, or each value of a dict of examples."""
    if isinstance(features, Mapping):
        return {key: np.asarray(value) for key, value in features.items()}
    return np.asarray(features)


def _infer_num_classes(labels_by_split: dict) -> int | None:
    """1 + the largest integer label over all splits, or None for float/absent labels.

    Raises:
      ValueError: some splits hold integer class labels and others float targets (a
        float split would silently turn the whole dataset into regression).
    """
    labels = {name: y for name, y in labels_by_split.items() if y is not None and y.size}
    integral = {name: y.dtype.kind in "iub" for name, y in labels.items()}
    if not labels or not all(integral.values()):
        if any(integral.values()):
            ints = next(name for name, kind in integral.items() if kind)
            floats = next(name for name, kind in integral.items() if not kind)
            raise ValueError(f"y_{floats} holds floats ({labels[floats].dtype}) but y_{ints} holds "
                             f"integer class labels ({labels[ints].dtype}) — give every split the same "
                             "kind of target, or pass num_classes= for classification")
        return None
    return 1 + max(int(y.max()) for y in labels.values())


def load_npz(path, x_key: str | Sequence[str] | Mapping[str, str] = "x", y_key: str | None = "y", *,
             num_classes: int | None = None, name: str | None = None) -> Dataset:
    """Loads a dataset from a numpy .npz archive.

    The archive holds the training split under `x_key`/`y_key` and, optionally,
    the other splits under the same keys with a `_val` / `_test` suffix
    (`x_val`, `y_val`, `x_test`, `y_test` for the default keys).

    A model that takes a dict of inputs reads several arrays: `x_key=["a", "b"]`
    gives every split x = {"a": ..., "b": ...} from the arrays `a`, `b` (`a_val`,
    `b_val`, `a_test`, ...); a mapping `x_key={"a": "xa", "b": "xb"}` names each
    input's array in the file. A split is present when all its inputs' arrays are.

    Example:
        >>> np.savez("pairs.npz", a=np.zeros((6, 2)), b=np.ones((6, 4)), y=np.arange(6) % 2)
        >>> ds = load_npz("pairs.npz", x_key=["a", "b"])
        >>> {key: value.shape for key, value in ds.train.x.items()}, ds.feature_shape
        ({'a': (6, 2), 'b': (6, 4)}, {'a': (2,), 'b': (4,)})

    Args:
        path: The .npz file.
        x_key: Key of the (n, *feature_shape) training features; or the keys (a
            list, or a mapping input name -> key) of a model's dict of inputs.
        y_key: Key of the (n,) training labels; None for unlabeled data.
        num_classes: As in `from_arrays`.
        name: Dataset name; defaults to the file's stem.

    Returns:
        A validated `Dataset`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a readable .npz, a key is missing (also one
            input of a split that has the others), or the arrays fail validation.
    """
    path = Path(path).expanduser()
    arrays = _read_npz(path)
    inputs = _input_keys(x_key)
    wanted = list(inputs.values()) + ([] if y_key is None else [y_key])
    missing = [key for key in wanted if key not in arrays]
    if missing:
        raise ValueError(f"{path}: no array {missing[0]!r}; the file holds {sorted(arrays)} — "
                         "pass x_key=/y_key= to name the right ones")

    def get(key, suffix=""):
        return None if key is None else arrays.get(key + suffix)

    def features(suffix=""):
        if isinstance(x_key, str):
            return get(x_key, suffix)
        found = {key: arrays[key + suffix] for key in inputs.values() if key + suffix in arrays}
        if found and len(found) < len(inputs):
            absent = next(key for key in inputs.values() if key not in found)
            raise ValueError(f"{path}: has {', '.join(k + suffix for k in found)} but no {absent + suffix!r} — "
                             f"give every input's {suffix[1:]} array, or none")
        return {input_name: found[key] for input_name, key in inputs.items()} if found else None

    return from_arrays(features(), get(y_key),
                       x_val=features("_val"), y_val=get(y_key, "_val"),
                       x_test=features("_test"), y_test=get(y_key, "_test"),
                       num_classes=num_classes, name=name or path.stem)


def _input_keys(x_key) -> dict[str, str]:
    """{input name: array key} of `load_npz`'s `x_key` (one array: {x_key: x_key})."""
    if isinstance(x_key, str):
        return {x_key: x_key}
    keys = dict(x_key) if isinstance(x_key, Mapping) else \
        {key: key for key in x_key} if isinstance(x_key, (list, tuple)) else None
    if not keys or not all(isinstance(k, str) and isinstance(v, str) for k, v in keys.items()):
        raise ValueError(f"x_key: expected an array name, a list of them or a mapping input name -> array "
                         f"name, got {x_key!r} — e.g. x_key: [a, b]")
    return keys


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Reads every array of an .npz file (no pickles) into memory."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path}: not a readable .npz archive ({error})") from error


def load_csv(path, *, label_column: int | str | None = -1, delimiter: str = ",",
             header: bool = True, num_classes: int | None = None, regression: bool = False,
             name: str | None = None) -> Dataset:
    """Loads a numeric CSV file as a training split (numpy only, no pandas).

    Args:
        path: The file; every cell must parse as a number.
        label_column: Index or (with a header) name of the label column; None
            for unlabeled data. The other columns are the (d,) features.
        delimiter: Field separator.
        header: Whether the first line holds column names.
        num_classes: As in `from_arrays`; inferred from the labels when None.
        regression: Treat labels as float32 targets instead of class indices.
        name: Dataset name; defaults to the file's stem.

    Returns:
        A validated `Dataset` with only a train split, features (d,) float32.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: an unparsable cell, an unknown label column, or a
            fractional class label (message gives the line number).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        table = np.loadtxt(path, delimiter=delimiter, skiprows=int(header), ndmin=2,
                           dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    if label_column is None:
        return from_arrays(table, name=name or path.stem)
    column = _column_index(path, label_column, header, delimiter, table.shape[1])
    x, y = np.delete(table, column, axis=1), table[:, column]
    if not regression:
        fractional = y != np.round(y)
        if fractional.any():
            row = int(np.argmax(fractional))
            raise ValueError(f"{path} line {row + 1 + int(header)}: label {y[row]} is not a "
                             "whole number — pass regression=True for real-valued targets")
        y = y.astype(np.int64)
    return from_arrays(x, y, num_classes=num_classes, name=name or path.stem)


def _column_index(path: Path, label_column: int | str, header: bool, delimiter: str,
                  num_columns: int) -> int:
    """Resolves a label column given by index or header name to a column index."""
    if isinstance(label_column, str):
        if not header:
            raise ValueError(f"{path}: label_column={label_column!r} is a name, but "
                             "header=False — pass the column index instead")
        with open(path) as file:
            names = [field.strip() for field in file.readline().split(delimiter)]
        if label_column not in names:
            suggestion = _in_parentheses(did_you_mean(label_column, names))
            raise ValueError(f"{path}: no column {label_column!r}{suggestion}; columns are {names}")
        return names.index(label_column)
    if not -num_columns <= label_column < num_columns:
        raise ValueError(f"{path}: label_column={label_column} is out of range for "
                         f"{num_columns} columns")
    return label_column % num_columns


def _in_parentheses(hint: str) -> str:
    return f" ({hint})" if hint else ""

# ---------------------------------------------------------------------------
# Text as bytes, in windows for next-token models


def read_text_bytes(path) -> np.ndarray:
    """The bytes of a text file, or of a folder's files, as `(characters,) uint8`.

    A folder's regular files (not its symlinks or subfolders: a symlinked licence
    would be read twice) are joined by one newline byte in file-name order.

    Args:
        path: A file, or a folder of files.

    Returns:
        (characters,) uint8 bytes; a byte is a token id in [0, 256).

    Raises:
        FileNotFoundError: `path` does not exist, or the folder holds no regular file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.is_symlink())
        if not files:
            raise FileNotFoundError(f"{path}: the folder holds no regular file to read as text")
        return np.frombuffer(b"\n".join(p.read_bytes() for p in files), np.uint8)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return np.frombuffer(path.read_bytes(), np.uint8)


def text_windows(text: np.ndarray, context: int, stride: int) -> dict[str, np.ndarray]:
    """Every window of `context + 1` consecutive bytes of `text` that starts at a multiple of `stride`.

    Window i is `text[i * stride : i * stride + context + 1]`: the model reads its
    first `context` bytes and predicts its last `context` (next-token targets).

    Args:
        text: (characters,) uint8 bytes, at least `context + 1` of them.
        context: tokens the model sees per example.
        stride: bytes between the starts of consecutive windows (`context`: each
            byte after the first is a target exactly once).

    Returns:
        {"tokens": (n, context + 1) int32, "mask": (n, context + 1) bool, all True}
        with n = (characters - context - 1) // stride + 1.
    """
    tokens = np.lib.stride_tricks.sliding_window_view(text, context + 1)[::stride].astype(np.int32)
    return {"tokens": tokens, "mask": np.ones(tokens.shape, bool)}


def _check_count(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"load_text: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def load_text(path, *, context: int = 64, stride: int | None = None, eval_stride: int | None = None,
              val_fraction: float = 0.1, test_fraction: float = 0.0, limit_bytes: int | None = None,
              name: str | None = None) -> Dataset:
    """A text file (or a folder of them) as byte windows for a next-token model such as `nn.models.gpt`.

    The bytes (`read_text_bytes`; the first `limit_bytes` of them when given)
    are split by position, never shuffled — windows overlap, so a random split
    would put the same characters in train and val::

        text[:n - n_val - n_test] | text[n - n_val - n_test : n - n_test] | text[n - n_test:]
                 train            |               val                     |      test

    with n_val = floor(val_fraction * n), n_test = floor(test_fraction * n), and
    each part is cut into windows by `text_windows` (train every `stride` bytes,
    val and test every `eval_stride`). Tokens are bytes: ids in [0, 256), so a
    model needs `vocab_size=256`; for ASCII text a byte is a character and the
    objective's bits per token are bits per character.

    Example:
      >>> _ = open("tiny.txt", "wb").write(bytes(range(20)))
      >>> ds = load_text("tiny.txt", context=3, stride=2, val_fraction=0.25, test_fraction=0.25)
      >>> ds.train.x["tokens"].tolist()                   # bytes 0..9, a window every 2
      [[0, 1, 2, 3], [2, 3, 4, 5], [4, 5, 6, 7], [6, 7, 8, 9]]
      >>> ds.val.x["tokens"].tolist(), ds.test.x["tokens"].tolist(), ds.feature_shape
      ([[10, 11, 12, 13]], [[15, 16, 17, 18]], (3,))

    Args:
        path: A text file, or a folder whose regular files are joined in name order.
        context: Tokens the model reads per example; windows hold `context + 1`.
        stride: Bytes between training windows; default `context`.
        eval_stride: Bytes between val/test windows; default `context`, so
            every byte of those parts but the first is predicted exactly once.
        val_fraction: Share of the bytes for val, in [0, 1); 0: no val split.
        test_fraction: Share of the bytes for test, in [0, 1); 0: no test split.
        limit_bytes: Read only the first `limit_bytes` bytes (quick runs).
        name: Dataset name; defaults to the file's (or folder's) name.

    Returns:
        A `Dataset` whose splits hold `{"tokens": (n, context + 1) int32, "mask":
        (n, context + 1) bool}` (`Split.x`, y None), `feature_shape=(context,)`
        and no classes; train it with `fdl.objectives.masked_sequence_cross_entropy`.

    Raises:
        FileNotFoundError: `path` does not exist or is an empty folder.
        ValueError: a bad argument, or a part with fewer than `context + 1`
            bytes (one line naming the part and the fix).
    """
    context = _check_count("context", context)
    stride = context if stride is None else _check_count("stride", stride)
    eval_stride = context if eval_stride is None else _check_count("eval_stride", eval_stride)
    for key, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise ValueError(f"load_text: {key} must be in [0, 1), got {fraction!r}")
    if val_fraction + test_fraction >= 1:
        raise ValueError(f"load_text: val_fraction + test_fraction = {val_fraction + test_fraction:g} "
                         "leaves no training text — keep their sum below 1")
    path = Path(path).expanduser()
    text = read_text_bytes(path)
    if limit_bytes is not None:
        text = text[:_check_count("limit_bytes", limit_bytes)]
    size = len(text)
    num_val, num_test = int(val_fraction * size), int(test_fraction * size)
    end_train, end_val = size - num_val - num_test, size - num_test
    parts = {"train": (text[:end_train], stride), "val": (text[end_train:end_val], eval_stride),
             "test": (text[end_val:], eval_stride)}
    wanted = {"train": True, "val": val_fraction > 0, "test": test_fraction > 0}
    splits = {}
    for part, (chunk, step) in parts.items():
        if not wanted[part]:
            continue
        if len(chunk) < context + 1:
            raise ValueError(f"load_text {path}: the {part} part has {len(chunk)} of the {size} bytes, fewer "
                             f"than context + 1 = {context + 1} — use a longer text, a smaller context "
                             "or a larger fraction for it")
        splits[part] = Split(text_windows(chunk, context, step))
    return validate_dataset(Dataset(name=name or path.name, feature_shape=(context,), **splits))

# ---------------------------------------------------------------------------
# MNIST and Fashion-MNIST from IDX files

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), optionally gzip-compressed.

    The format: two zero bytes, a type code byte (0x08 = uint8 ... 0x0E =
    float64), the number of dimensions, then each dimension as a big-endian
    uint32, then the values in big-endian C order.

    Args:
        path: The file; a name ending in .gz is decompressed.

    Returns:
        The array, in native byte order, shape as declared in the header.

    Raises:
        ValueError: the file is unreadable, has a bad magic number, or its size
            disagrees with the declared shape.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError) as error:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: cannot read ({error})") from error
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: bad magic number 0x{data[:4].hex():0<8} — expected "
                         "0x0000TTNN (TT a type code 08..0E, NN the number of dimensions)")
    dtype, num_dims = _IDX_DTYPES[data[2]], data[3]
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise ValueError(f"{path}: header declares {num_dims} dimensions but the file "
                         f"has only {len(data)} bytes")
    shape = struct.unpack(f">{num_dims}I", data[4:header_size])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise ValueError(f"{path}: {len(data) - header_size} bytes of data, expected {expected} "
                         f"for shape {shape} — the file is truncated or not IDX")
    values = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def _load_idx_dataset(name: str, directory, class_names) -> Dataset:
    """Loads an MNIST-layout dataset: images (n, 28, 28, 1) in [0, 1], int32 labels."""
    directory = Path(directory).expanduser()
    hint = (f"expected {', '.join(IDX_FILES)} (each optionally .gz) in {directory}; "
            "fdl never downloads")
    if not directory.is_dir():
        raise FileNotFoundError(f"{name}: {directory} is not a directory — {hint}")
    arrays = []
    for stem, num_dims in zip(IDX_FILES, (3, 1, 3, 1)):
        path = next((directory / (stem + suffix) for suffix in ("", ".gz")
                     if (directory / (stem + suffix)).is_file()), None)
        if path is None:
            raise FileNotFoundError(f"{name}: cannot find {stem}[.gz] — {hint}")
        try:
            array = read_idx(path)
        except ValueError as error:
            raise ValueError(f"{name}: {error}; {hint}") from error
        if array.ndim != num_dims:
            raise ValueError(f"{name}: {path} has shape {array.shape}, expected {num_dims} "
                             f"dimensions — {hint}")
        arrays.append(array)
    train_images, train_labels, test_images, test_labels = arrays
    # uint8 pixels 0..255 -> [0, 1]; channels-last axis for convolutions.
    scale = np.float32(1 / 255)
    return from_arrays(train_images[..., None] * scale, train_labels,
                       x_test=test_images[..., None] * scale, y_test=test_labels,
                       num_classes=len(class_names), class_names=class_names, name=name)

# ---------------------------------------------------------------------------
# mnist1d, generated and cached

MNIST1D_CACHE_FILE = "mnist1d-v1.npz"  # bump the version when the cached layout changes
_MNIST1D_LAYOUT = {"x": ((4000, 40), np.float32), "y": ((4000,), np.int32),
                   "x_test": ((1000, 40), np.float32), "y_test": ((1000,), np.int32),
                   "t": ((40,), np.float32)}


def cache_dir() -> Path:
    """The folder for generated datasets.

    Returns:
        `$FDL_CACHE_DIR` if set, else `$XDG_CACHE_HOME/fdl`, else `~/.cache/fdl`.
    """
    if os.environ.get("FDL_CACHE_DIR"):
        return Path(os.environ["FDL_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "fdl"


def load_mnist1d(path=None) -> Dataset:
    """Loads mnist1d (Greydanus & Kalis, 2020): 4000 train, 1000 test, 10 classes.

    Generated by the `mnist1d` package's own `make_dataset(get_dataset_args())`
    (default arguments, seed 42) on first use, then read from the cache.
    There is no val split: use `fdl.data.train_val_split`.

    Args:
        path: Cache folder; defaults to `cache_dir()`.

    Returns:
        A `Dataset` with x (40,) float32 signals, int32 labels, and the time
        grid `extras["t"]: (40,) float32`.
    """
    cache_file = Path(path or cache_dir()).expanduser() / MNIST1D_CACHE_FILE
    arrays = _read_cache(cache_file, _MNIST1D_LAYOUT)
    if arrays is None:
        arrays = _generate_mnist1d()
        _write_cache(cache_file, arrays)
    return Dataset(name="mnist1d", train=Split(arrays["x"], arrays["y"]),
                   test=Split(arrays["x_test"], arrays["y_test"]), num_classes=10,
                   class_names=DIGIT_NAMES, extras={"t": arrays["t"]})


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """Runs the mnist1d generator, restoring the global RNGs it reseeds."""
    from mnist1d.data import get_dataset_args, make_dataset  # heavy (scipy): import on use

    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        generated = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    arrays = {key: generated[key].astype(dtype) for key, (_, dtype) in _MNIST1D_LAYOUT.items()}
    # validate before caching, so a cache file always holds valid data
    validate_dataset(Dataset("mnist1d", Split(arrays["x"], arrays["y"]),
                             test=Split(arrays["x_test"], arrays["y_test"]), num_classes=10))
    return arrays


def array_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 hex digest over the names, dtypes, shapes and bytes of `arrays`."""
    digest = hashlib.sha256()
    for key in sorted(arrays):
        array = np.ascontiguousarray(arrays[key])
        digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read_cache(path: Path, layout) -> dict[str, np.ndarray] | None:
    """Reads a cache file written by `_write_cache`; None (with a warning) if unusable."""
    if not path.is_file():
        return None
    try:
        arrays = _read_npz(path)
        stored_digest = str(arrays.pop("sha256"))
    except (ValueError, KeyError) as error:
        return _discard(path, f"unreadable ({error})")
    for key, (shape, dtype) in layout.items():
        if key not in arrays or arrays[key].shape != shape or arrays[key].dtype != dtype:
            return _discard(path, f"array {key!r} missing or not {shape} {np.dtype(dtype)}")
    if array_digest(arrays) != stored_digest:
        return _discard(path, "sha256 mismatch")
    return arrays


def _discard(path: Path, reason: str) -> None:
    warnings.warn(f"rebuilding corrupt cache {path}: {reason}", stacklevel=3)
    return None


def _write_cache(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes `arrays` plus their sha256 atomically (fdl.io.write_bytes)."""
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(array_digest(arrays)), **arrays)
    write_bytes(path, buffer.getvalue())

# ---------------------------------------------------------------------------
# The dispatcher


def _load_mnist(path) -> Dataset:
    return _load_idx_dataset("mnist", path, DIGIT_NAMES)


def _load_fashion_mnist(path) -> Dataset:
    return _load_idx_dataset("fashion_mnist", path, FASHION_MNIST_CLASS_NAMES)


LOADERS = {"mnist1d": load_mnist1d, "mnist": _load_mnist,
           "fashion_mnist": _load_fashion_mnist, "npz": load_npz, "csv": load_csv, "text": load_text}
_PATH_OPTIONAL = {"mnist1d"}


def load(name: str, path=None, **kwargs) -> Dataset:
    """Loads a dataset by name; the entry point configs use.

    Args:
        name: One of `LOADERS`: "mnist1d" (generated, cached; `path` is the
            cache folder), "mnist" and "fashion_mnist" (`path` is a folder with
            the four IDX files), "npz" (`load_npz`), "csv" (`load_csv`),
            "text" (`load_text`: byte windows of a file or folder, split by position).
        path: The file or folder to read; required except for "mnist1d".
        **kwargs: Passed to the loader, e.g. `label_column=` for "csv",
            `context=64, stride=16, val_fraction=0.1` for "text".

    Returns:
        A validated `Dataset`.

    Raises:
        ValueError: an unknown name (with a did-you-mean), a missing `path`, or
            anything the loader raises.
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}{_in_parentheses(did_you_mean(name, LOADERS))}; "
                         f"valid names: {', '.join(sorted(LOADERS))}")
    if path is None and name not in _PATH_OPTIONAL:
        raise ValueError(f"load({name!r}) needs path= (a file or folder to read); fdl never "
                         "downloads")
    return LOADERS[name](path, **kwargs)
