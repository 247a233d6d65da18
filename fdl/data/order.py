"""The epoch order: the contract shared by the training engine and the streams.

The order of epoch e depends only on (key, e) and is drawn on the HOST with
numpy's Philox generator: a permutation costs microseconds there, while on
XLA:CPU a shuffle inside the compiled epoch (a sort) cost a third of a small
model's epoch (experiments/benchmark_engine.py). Every path — the fused epoch
(its batches cut on the host, or gathered on the device from indices it is
given), the per-step and host-streamed epochs, `fdl.data.NpyStream`,
populations — takes its batches in this order, so they give the same
parameters, and a resumed run replays exactly the batches it would have seen.

Changed once (fdl 0.3): until then the order was `jax.random.permutation`
computed inside the compiled epoch; the same seed now gives another (equally
random) order.
"""
import jax
import numpy as np

from fdl.typing import PRNGKey

__all__ = ["DATA_ORDER_STREAM", "epoch_permutation", "batch_indices"]

DATA_ORDER_STREAM = 0x0DA7A  # keeps the data order apart from every other use of the run's key


def _key_words(key) -> tuple[int, int]:
    """The two uint32 words of a JAX key (typed `jax.random.key` or raw uint32[2]), read to the host."""
    if jax.dtypes.issubdtype(getattr(key, "dtype", None), jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    words = np.asarray(key, np.uint32).reshape(-1)
    if words.shape != (2,):
        raise ValueError(f"key: expected a JAX PRNG key (two uint32 words), got shape {np.shape(key)}")
    return int(words[0]), int(words[1])


def epoch_permutation(key: PRNGKey, epoch: int, num_examples: int) -> np.ndarray:
    """The shuffled order of the examples for one epoch, drawn on the host.

    Args:
        key: The run's key (`TrainState.rng`, or any JAX key; the same for every epoch).
        epoch: Epoch number, a Python int >= 0.
        num_examples: n.

    Returns:
        (n,) int32 numpy permutation of range(n): numpy's Philox generator keyed by
        (the key's two words, DATA_ORDER_STREAM, epoch).
    """
    high, low = _key_words(key)
    generator = np.random.Generator(np.random.Philox(key=[(high << 32) | low, (DATA_ORDER_STREAM << 32) | int(epoch)]))
    return generator.permutation(num_examples).astype(np.int32)


def batch_indices(key: PRNGKey, epoch: int, num_examples: int, batch_size: int) -> np.ndarray:
    """The example indices of every batch of one epoch (numpy, on the host).

    The last partial batch is DROPPED: each epoch has `n // batch_size` batches,
    all of the same shape, so one compiled step serves them all; the
    `n % batch_size` left-out examples change every epoch with the permutation.

    Args:
        key: The run's key (see `epoch_permutation`).
        epoch: Epoch number, a Python int >= 0.
        num_examples: n.
        batch_size: Examples per batch, in [1, n].

    Returns:
        (n // batch_size, batch_size) int32 indices: row i is batch i.

    Raises:
        ValueError: batch_size outside [1, n].
    """
    if not 1 <= batch_size <= num_examples:
        raise ValueError(f"batch_size must be in [1, num_examples={num_examples}], got "
                         f"{batch_size}")
    num_batches = num_examples // batch_size
    permutation = epoch_permutation(key, epoch, num_examples)
    return permutation[: num_batches * batch_size].reshape(num_batches, batch_size)
