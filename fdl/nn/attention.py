"""Multi-head self-attention and a Transformer encoder block.

One example is a sequence `x: (length, features)`. A padding mask travels
WITH the example: both layers take either `x` or a pair `(x, valid)` where
`valid: (length,) bool` is True at real tokens and False at padding (init
gets the matching pair of shapes `((length, features), (length,))`).

Mask convention: True means "may attend", as Flax's masks and `valid` above.
PyTorch's `key_padding_mask` and boolean `attn_mask` mean the opposite (True =
masked out): port them with `valid = ~key_padding_mask`. Float additive masks
are not accepted.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from fdl.nn.activations import Activation
from fdl.nn.combinators import residual, serial
from fdl.nn.core import Layer, ShapeError, expect_sequence
from fdl.nn.dense import Dense
from fdl.nn.dropout import Dropout
from fdl.nn.initializers import get_initializer
from fdl.nn.normalization import LayerNorm

__all__ = ["MultiHeadSelfAttention", "TransformerEncoderBlock", "attention_weights"]


def split_inputs(kind: str, inputs):
    """`x` -> `(x, None)`; `(x, valid)` -> `(x, valid)`, checking that `valid` is bool."""
    if not isinstance(inputs, tuple):
        return inputs, None
    x, valid = inputs
    if valid.dtype != jnp.bool_:
        raise TypeError(f"{kind}: valid must be a bool array (True = real token), got dtype {valid.dtype} — "
                        "pass e.g. jnp.arange(length) < true_length, or ~key_padding_mask from PyTorch")
    return x, valid


def split_input_shape(kind: str, input_shape) -> tuple[tuple[int, ...], bool]:
    """`(x_shape, has_valid)` from `(length, features)` or `((length, features), (length,))`."""
    if not (input_shape and isinstance(input_shape[0], (tuple, list))):
        expect_sequence(kind, input_shape)
        return tuple(input_shape), False
    if len(input_shape) != 2:
        raise ShapeError(kind, f"expected the shapes of (x, valid), ((length, features), (length,)), "
                         f"got {input_shape}")
    x_shape, valid_shape = map(tuple, input_shape)
    expect_sequence(kind, x_shape)
    if valid_shape != x_shape[:1]:
        raise ShapeError(kind, f"valid must be ({x_shape[0]},), one bool per token of x {x_shape}, "
                         f"got {valid_shape}")
    return x_shape, True


def allowed_pairs(length: int, causal: bool, valid) -> jax.Array:
    """`(length, length)` bool, `[query, key]` True where the query may attend to the key."""
    allowed = jnp.ones((length, length), jnp.bool_)
    if causal:
        allowed = jnp.tril(allowed)
    if valid is not None:
        allowed = allowed & valid[None, :]
    return allowed


def attention_weights(q, k, allowed):
    """Scaled dot-product attention weights, softmax over the allowed keys.

    Logits `q . k / sqrt(head_dim)` and the softmax run in at least float32.
    A query with no allowed key gets all-zero weights (its output is 0), never
    NaN: masked logits are set to the dtype's minimum, not -inf, and the
    weights are multiplied by the mask after the softmax.

    Args:
      q: `(length, heads, head_dim)` queries.
      k: `(length, heads, head_dim)` keys.
      allowed: `(length, length)` bool, `[query, key]` True = may attend.

    Returns:
      `weights: (heads, length, length)` in the compute dtype.
    """
    compute = jnp.promote_types(q.dtype, jnp.float32)
    logits = jnp.einsum("qhd,khd->hqk", q.astype(compute), k.astype(compute))
    logits = jnp.where(allowed, logits / math.sqrt(q.shape[-1]), jnp.finfo(compute).min)
    return jax.nn.softmax(logits, axis=-1) * allowed


def _check_positive(kind: str, name: str, value, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{kind}: {name} must be a positive int, got {value!r}")


def MultiHeadSelfAttention(num_heads: int, *, head_dim: int | None = None,
                           out_features: int | None = None, causal: bool = False,
                           dropout_rate: float = 0.0, use_bias: bool = True,
                           w_init="lecun_normal", b_init="zeros", dtype=jnp.float32) -> Layer:
    """Multi-head scaled dot-product self-attention over one sequence.

    Per head h: `q = x @ wq_h + bq_h` (likewise k, v), weights
    `softmax(q k^T / sqrt(head_dim))` over the keys a query may attend to,
    head output `weights @ v`; the heads' outputs are projected together by
    `out`. Logits and softmax run in at least float32 (see
    `attention_weights`).

    Masks (True = may attend, see the module docstring): `causal=True` lets
    position t attend to keys 0..t only; a padding mask `valid` comes with
    the input `(x, valid)`, and padding keys are never attended. Output rows
    of padded queries are 0, so padding values never reach a real token.
    A query with nothing to attend to (e.g. all tokens padding) outputs 0, never NaN.

    Args:
      num_heads: number of heads.
      head_dim: width of each head's query/key/value; default
        `features // num_heads` (features must then divide evenly).
      out_features: output width; default the input's `features`.
      causal: mask future positions.
      dropout_rate: probability of dropping an attention weight in training
        (as PyTorch's `MultiheadAttention(dropout=...)`); needs `key` when > 0
        and `train=True`.
      use_bias: add biases to the four projections.
      w_init, b_init: initializers (see fdl.nn.initializers); each kernel is
        drawn as a 2-D `(fan_in, fan_out)` matrix, then reshaped.
      dtype: params dtype.

    Params (Flax's per-head layout): `query`, `key`, `value` each
    `{"w": (features, num_heads, head_dim), "b": (num_heads, head_dim)}`;
    `out` `{"w": (num_heads, head_dim, out_features), "b": (out_features,)}`.
    From PyTorch (`E = features`): `query.w = in_proj_weight[:E].T.reshape(E,
    num_heads, head_dim)`, `out.w = out_proj.weight.T.reshape(num_heads, head_dim, E)`.
    Input `x: (length, features)` or `(x, valid)` with `valid: (length,)` bool;
    output `(length, out_features)` either way.

    Raises:
      ValueError: bad constructor arguments (constructor).
      ShapeError: an input that is not `(length, features)` (or the pair
        with `valid: (length,)`), or features not divisible by num_heads when
        `head_dim` is None (init).
      TypeError: a `valid` that is not bool (apply).
    """
    kind = "MultiHeadSelfAttention"
    _check_positive(kind, "num_heads", num_heads)
    _check_positive(kind, "head_dim", head_dim, optional=True)
    _check_positive(kind, "out_features", out_features, optional=True)
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) \
            or not 0 <= dropout_rate < 1:
        raise ValueError(f"{kind}: dropout_rate is the drop probability and must be in [0, 1), "
                         f"got {dropout_rate!r}")
    w_initializer = get_initializer(w_init, owner=f"{kind} w_init")
    b_initializer = get_initializer(b_init, owner=f"{kind} b_init")
    weight_dropout = Dropout(dropout_rate)

    def projection(key, fan_in_shape, fan_out_shape):
        w_key, b_key = jax.random.split(key)
        w = w_initializer(w_key, (math.prod(fan_in_shape), math.prod(fan_out_shape)), dtype)
        params = {"w": w.reshape(fan_in_shape + fan_out_shape)}
        if use_bias:
            params["b"] = b_initializer(b_key, fan_out_shape, dtype)
        return params

    def init(key, input_shape):
        (length, features), _ = split_input_shape(kind, input_shape)
        if head_dim is None and features % num_heads:
            raise ShapeError(kind, f"features {features} is not divisible by num_heads {num_heads} — "
                             f"pick num_heads dividing {features} or set head_dim")
        heads = (num_heads, head_dim or features // num_heads)
        out = out_features or features
        keys = jax.random.split(key, 4)
        params = {name: projection(k, (features,), heads)
                  for name, k in zip(("query", "key", "value"), keys)}
        params["out"] = projection(keys[3], heads, (out,))
        return (length, out), params, {}

    def project(params, x, subscripts):
        y = jnp.einsum(subscripts, x, params["w"])
        return y + params["b"] if use_bias else y

    def apply(params, state, inputs, *, key=None, train=False):
        x, valid = split_inputs(kind, inputs)
        q, k, v = (project(params[name], x, "lf,fhd->lhd") for name in ("query", "key", "value"))
        weights = attention_weights(q, k, allowed_pairs(x.shape[0], causal, valid))
        if dropout_rate > 0:
            weights, _ = weight_dropout.apply({}, {}, weights, key=key, train=train)
        heads = jnp.einsum("hqk,khd->qhd", weights.astype(v.dtype), v)
        y = project(params["out"], heads, "qhd,hdo->qo")
        if valid is not None:
            y = jnp.where(valid[:, None], y, 0)
        return y, state

    return Layer(init, apply, kind)


def _with_valid(attention: Layer, valid) -> Layer:
    """`attention` taking `x` alone, with this call's `valid` bound (used inside one apply only)."""

    def apply(params, state, x, *, key=None, train=False):
        return attention.apply(params, state, (x, valid), key=key, train=train)

    return attention._replace(apply=apply)


def TransformerEncoderBlock(num_heads: int, mlp_dim: int, *, dropout_rate: float = 0.1,
                            causal: bool = False, norm_first: bool = True,
                            activation="gelu", epsilon: float = 1e-5) -> Layer:
    """A Transformer encoder block composed from catalogue layers.

    With `norm_first` (pre-norm, as GPT-2/ViT and PyTorch's `norm_first=True`)::

        serial(residual(LayerNorm, MultiHeadSelfAttention, Dropout),
               residual(LayerNorm, Dense(mlp_dim), Activation, Dropout, Dense(features), Dropout))

    and without it (post-norm, the original Transformer and PyTorch's default)::

        serial(residual(MultiHeadSelfAttention, Dropout), LayerNorm,
               residual(Dense(mlp_dim), Activation, Dropout, Dense(features), Dropout), LayerNorm)

    so params read `block["residual_0"]["multi_head_self_attention_1"]["query"]["w"]`
    (pre-norm). As in PyTorch's `TransformerEncoderLayer`, `dropout_rate` also
    drops attention weights. `Dense(features)` needs the input's width, so the
    composition is built at init and at each apply from the example's shape.

    Padding mask: the block takes `x` or `(x, valid)` (see the module
    docstring). With `valid`, each apply binds it into the attention child
    (the only position-mixing layer) and returns `(y, valid)`, so blocks stack
    in `serial`; a final layer (e.g. masked pooling) consumes the pair.
    Output rows at padded positions are unspecified; real tokens never depend
    on them.

    Args:
      num_heads: attention heads; must divide the input's features.
      mlp_dim: hidden width of the MLP.
      dropout_rate: drop probability of every Dropout and of attention weights.
      causal: mask future positions in attention.
      norm_first: pre-norm (True) or post-norm (False).
      activation: the MLP's activation name or function; "gelu" is the exact
        erf form (fdl's, PyTorch's default gelu).
      epsilon: LayerNorm's epsilon (PyTorch's 1e-5).

    Input `(length, features)` or `(x, valid)`; output `(length, features)`,
    or `(y, valid)` for a pair.

    Raises:
      ValueError: bad constructor arguments (constructor).
      ShapeError: a bad input shape or features not divisible by num_heads (init).
    """
    kind = "TransformerEncoderBlock"
    _check_positive(kind, "mlp_dim", mlp_dim)
    attention = MultiHeadSelfAttention(num_heads, causal=causal, dropout_rate=dropout_rate)
    act = Activation(activation)

    def body(attention_layer: Layer, features: int) -> Layer:
        mlp = (Dense(mlp_dim), act, Dropout(dropout_rate), Dense(features), Dropout(dropout_rate))
        if norm_first:
            return serial(residual(LayerNorm(epsilon=epsilon), attention_layer, Dropout(dropout_rate)),
                          residual(LayerNorm(epsilon=epsilon), *mlp))
        return serial(residual(attention_layer, Dropout(dropout_rate)), LayerNorm(epsilon=epsilon),
                      residual(*mlp), LayerNorm(epsilon=epsilon))

    def init(key, input_shape):
        x_shape, has_valid = split_input_shape(kind, input_shape)
        try:
            _, params, state = body(attention, x_shape[-1]).init(key, x_shape)
        except ShapeError as error:
            raise error.within(kind) from None
        return ((x_shape, x_shape[:1]) if has_valid else x_shape), params, state

    def apply(params, state, inputs, *, key=None, train=False):
        x, valid = split_inputs(kind, inputs)
        bound = attention if valid is None else _with_valid(attention, valid)
        y, state = body(bound, x.shape[-1]).apply(params, state, x, key=key, train=train)
        return (y if valid is None else (y, valid)), state

    return Layer(init, apply, kind)
