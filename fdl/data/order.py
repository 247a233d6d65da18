"""The epoch order: the contract shared by the training engine and the streams.

The order of epoch e depends only on (key, e): the engine computes it on the
device inside a compiled epoch, `fdl.data.NpyStream` computes the same
indices on the host, and a resumed run replays exactly the batches it would
have seen.
"""
import jax

from fdl.typing import PRNGKey

__all__ = ["epoch_permutation", "batch_indices"]


def epoch_permutation(key: PRNGKey, epoch, num_examples: int) -> jax.Array:
    """The shuffled order of the examples for one epoch.

    Args:
        key: The run's data key (the same for every epoch).
        epoch: Epoch number, a Python int or a traced int32 scalar.
        num_examples: n, a static Python int.

    Returns:
        (n,) int32 permutation of range(n).
    """
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def batch_indices(key: PRNGKey, epoch, num_examples: int, batch_size: int) -> jax.Array:
    """The example indices of every batch of one epoch.

    The last partial batch is DROPPED: each epoch has `n // batch_size` batches,
    all of the same shape, so one compiled step serves them all; the
    `n % batch_size` left-out examples change every epoch with the permutation.

    Args:
        key: The run's data key.
        epoch: Epoch number, a Python int or a traced int32 scalar.
        num_examples: n, a static Python int.
        batch_size: Examples per batch, a static int in [1, n].

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
