"""Embedding tables: token ids to vectors, learned positional embeddings and rotary embeddings."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jax.nn import initializers as jinit

from fdl.nn.core import Layer, ShapeError, expect_rank
from fdl.nn.initializers import get_initializer

__all__ = ["Embedding", "PositionalEmbedding", "RotaryEmbedding", "rotary_embedding"]

# PyTorch's nn.Embedding init, N(0, 1). Flax's nn.Embed uses a truncated normal
# with stddev 1/sqrt(features), Keras' uniform(-0.05, 0.05).
TOKEN_EMBEDDING_INIT = jinit.normal(stddev=1.0)
# BERT, GPT-2 and ViT initialize learned position tables with stddev 0.02.
POSITION_EMBEDDING_INIT = jinit.normal(stddev=0.02)


def Embedding(vocab_size: int, features: int, *, w_init=TOKEN_EMBEDDING_INIT,
              dtype=jnp.float32) -> Layer:
    """Looks up a learned `features`-vector for each integer token id.

    Row `i` of the table is the vector of id `i`; the gradient reaches only
    the rows that the ids use.

    Ids outside `[0, vocab_size)` cannot be checked under `jit`, so they are
    not an error: they read a row of NaN (`.at[ids].get(mode="fill")` with
    negative ids not wrapped), which makes the loss NaN instead of silently
    reusing a row: plain indexing `table[ids]` clamps them to the last row
    and `jnp.take` wraps negative ids. Validate ids when the data is loaded
    (as `fdl.data` does for class labels).

    Args:
      vocab_size: number of rows, ids run from 0 to vocab_size - 1.
      features: width of each vector.
      w_init: initializer name or callable for the table; the default is
        N(0, 1), PyTorch's `nn.Embedding` (Flax: truncated normal with stddev
        1/sqrt(features); Keras: uniform(-0.05, 0.05)).
      dtype: dtype of the table.

    Params: `embedding: (vocab_size, features)`.
    Input `(length,)` int ids (any shape `(...)` works); output `(length, features)`.

    Raises:
      ValueError: vocab_size or features not a positive int (constructor).
      TypeError: non-integer input, e.g. float ids or one-hot vectors (apply).
    """
    check_positive_int("Embedding", "vocab_size", vocab_size)
    check_positive_int("Embedding", "features", features)
    initializer = get_initializer(w_init, owner="Embedding w_init")

    def init(key, input_shape):
        # init sees only the shape; the integer dtype is checked in apply.
        params = {"embedding": initializer(key, (vocab_size, features), dtype)}
        return tuple(input_shape) + (features,), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        if not jnp.issubdtype(x.dtype, jnp.integer):
            raise TypeError(f"Embedding: expected integer token ids, got {x.dtype} input — pass "
                            "ids as int32 (x.astype(jnp.int32)); for one-hot or dense vectors "
                            "use Dense(features, use_bias=False)")
        table = jnp.asarray(params["embedding"])  # may be a numpy array, which has no .at
        return table.at[x].get(mode="fill", fill_value=jnp.nan, wrap_negative_indices=False), state

    return Layer(init, apply, "Embedding")


def PositionalEmbedding(max_length: int, features: int, *, w_init=POSITION_EMBEDDING_INIT,
                        dtype=jnp.float32) -> Layer:
    """Adds a learned vector per position: `y[t] = x[t] + embedding[t]`.

    As in BERT and GPT-2: one table row per position `0..max_length - 1`; a
    sequence shorter than `max_length` uses the first rows.

    Args:
      max_length: the longest sequence the layer accepts.
      features: width of the input vectors.
      w_init: initializer name or callable; the default is N(0, 0.02²)
        (BERT, GPT-2, ViT).
      dtype: dtype of the table.

    Params: `embedding: (max_length, features)`.
    Input `(length, features)` float with length <= max_length; output the same shape.

    Raises:
      ValueError: max_length or features not a positive int (constructor).
      ShapeError: input not `(length, features)`, length > max_length or a
        different feature width (init).
    """
    check_positive_int("PositionalEmbedding", "max_length", max_length)
    check_positive_int("PositionalEmbedding", "features", features)
    initializer = get_initializer(w_init, owner="PositionalEmbedding w_init")

    def init(key, input_shape):
        expect_rank("PositionalEmbedding", input_shape, 2, "(length, features)",
                    "put an Embedding(vocab_size, features) before it")
        length, width = input_shape
        if length > max_length:
            raise ShapeError("PositionalEmbedding", f"sequence length {length} exceeds max_length="
                             f"{max_length} — raise max_length or crop the sequences")
        if width != features:
            raise ShapeError("PositionalEmbedding", f"expected {features} features, got input "
                             f"{tuple(input_shape)} — build it as PositionalEmbedding({max_length}, {width})")
        return tuple(input_shape), {"embedding": initializer(key, (max_length, features), dtype)}, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        return x + params["embedding"][: x.shape[0]], state

    return Layer(init, apply, "PositionalEmbedding")


def rotary_embedding(x, *, base: float = 10000.0, positions=None):
    """Rotary position embedding (RoPE, Su et al. 2021, arXiv:2104.09864), GPT-NeoX layout.

    Position `t` rotates each pair `(x[t, ..., i], x[t, ..., i + dim/2])` of the
    last axis by the angle `t * base^(-2i/dim)`, `i < dim/2`::

        y[..., :half] = x1 * cos - x2 * sin,   y[..., half:] = x2 * cos + x1 * sin

    with `x1, x2 = x[..., :half], x[..., half:]`. This is the "rotate half"
    pairing of GPT-NeoX, Hugging Face's Llama/Mistral (`rotate_half`) and
    PyTorch-style ports; the original RoFormer, Meta's Llama reference code
    and GPT-J pair adjacent features `(2i, 2i + 1)` instead (interleaved).
    The two are the same function after permuting the q/k projection columns
    (`w[..., perm]` with `perm = concat(arange(0, dim, 2), arange(1, dim, 2))`
    maps interleaved weights to this layout). Applied to queries and keys, the
    score `rope(q)[m] . rope(k)[n]` depends on the positions only through
    `m - n`. The angles and rotation run in at least float32; the output has
    the input's dtype.

    Args:
      x: `(length, ..., dim)` float, e.g. `(length, heads, head_dim)`; `dim` even.
      base: the frequency base, 10000 as in the paper and Llama 1/2 (Llama 3
        uses 500000).
      positions: `(length,)` int or float positions; default `0..length - 1`.

    Returns:
      The rotated `x`, same shape and dtype.

    Raises:
      ValueError: an odd last axis.

    Example:
      >>> x = jnp.ones((3, 2, 4))  # (length, heads, head_dim)
      >>> y = nn.rotary_embedding(x)
      >>> y.shape, bool(jnp.allclose(y[0], x[0]))  # position 0 is not rotated
      ((3, 2, 4), True)
    """
    length, dim = x.shape[0], x.shape[-1]
    if dim % 2:
        raise ValueError(f"rotary_embedding: the last axis must be even (pairs of features), "
                         f"got x of shape {tuple(x.shape)}")
    compute = jnp.promote_types(x.dtype, jnp.float32)
    # The frequencies are a float64 numpy constant, rounded once to the compute dtype.
    inverse_frequency = jnp.asarray(base ** (-np.arange(0, dim, 2) / dim), compute)
    positions = jnp.arange(length) if positions is None else jnp.asarray(positions)
    angles = positions.astype(compute)[:, None] * inverse_frequency  # (length, dim / 2)
    angles = angles.reshape((length,) + (1,) * (x.ndim - 2) + (dim // 2,))
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = jnp.split(x.astype(compute), 2, axis=-1)
    return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).astype(x.dtype)


def RotaryEmbedding(*, base: float = 10000.0) -> Layer:
    """`rotary_embedding` as a layer: rotates the last axis by each example's positions `0..length - 1`.

    `MultiHeadSelfAttention(rotary=True)` applies the same rotation to its
    queries and keys per head; this layer is for attention written by hand.

    Args:
      base: the frequency base (see `rotary_embedding`), > 0.

    No params. Input `(length, ..., dim)` float with `dim` even, e.g.
    `(length, heads, head_dim)`; output the same shape.

    Raises:
      ValueError: base <= 0 (constructor).
      ShapeError: an input without a feature axis or with an odd one (init).
    """
    if not base > 0:
        raise ValueError(f"RotaryEmbedding: base must be > 0, got {base!r}")

    def init(key, input_shape):
        del key
        shape = tuple(input_shape)
        if len(shape) < 2 or shape[-1] % 2:
            raise ShapeError("RotaryEmbedding", f"expected input (length, ..., dim) with dim even, "
                             f"got {shape} — rotary pairs need an even number of features")
        return shape, {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del params, key, train
        return rotary_embedding(x, base=base), state

    return Layer(init, apply, "RotaryEmbedding")


def check_positive_int(kind: str, name: str, value) -> None:
    """Raises a ValueError unless `value` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{kind}: {name} must be a positive int, got {value!r}")
