"""fdl.data: datasets as host numpy arrays, with load-time validation.

The ground floor of the data side: it imports numpy and jax only, never a
model (`fdl.nn`), the engine (`fdl.train`), configs or the command line.

    >>> from fdl import data
    >>> ds = data.train_val_split(data.load("mnist1d"), 0.1)
    >>> ds, stats = data.preprocess(ds, "standardize")
    >>> ds.train.x.shape, ds.val.x.shape, ds.test.x.shape
    ((3600, 40), (400, 40), (1000, 40))

Modules: `dataset` (containers), `sources` (loaders), `validate` (load-time
checks and the dtype rule), `split`, `preprocess`, `augment` (per-example JAX
augmentations), `order` (the epoch order shared with the engine), `stream`
(memory-mapped .npy batches with device prefetch).
"""
from fdl.data.augment import (Augment, compose, gaussian_noise, mixup, random_crop,
                              random_flip, random_shift)
from fdl.data.dataset import Dataset, Split, as_arrays, as_examples
from fdl.data.order import batch_indices, epoch_permutation
from fdl.data.preprocess import (MinMaxStats, StandardizeStats, apply_min_max,
                                 apply_standardize, fit_min_max, fit_standardize,
                                 invert_min_max, invert_standardize, one_hot, preprocess,
                                 transform)
from fdl.data.sources import (cache_dir, from_arrays, load, load_csv, load_mnist1d, load_npz,
                              load_text, read_idx, read_text_bytes, text_windows)
from fdl.data.split import kfold_indices, train_val_split
from fdl.data.stream import NpyStream, Prefetcher
from fdl.data.validate import check_example_tree, check_input_shape, validate_dataset

__all__ = [
    # containers
    "Dataset", "Split", "as_arrays", "as_examples",
    # sources
    "load", "load_mnist1d", "load_npz", "load_csv", "load_text", "read_text_bytes", "text_windows",
    "from_arrays", "read_idx", "cache_dir",
    # validation
    "validate_dataset", "check_input_shape", "check_example_tree",
    # splits
    "train_val_split", "kfold_indices",
    # preprocessing
    "preprocess", "transform", "one_hot",
    "StandardizeStats", "fit_standardize", "apply_standardize", "invert_standardize",
    "MinMaxStats", "fit_min_max", "apply_min_max", "invert_min_max",
    # augmentation
    "Augment", "random_shift", "random_crop", "random_flip", "gaussian_noise", "compose", "mixup",
    # epoch order and streaming
    "epoch_permutation", "batch_indices", "NpyStream", "Prefetcher",
]
