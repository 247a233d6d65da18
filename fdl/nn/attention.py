"""Multi-head self-attention and Transformer encoder and decoder blocks.

One example is a sequence `x: (length, features)`. A mask travels WITH the
example: every layer here takes `x` or a pair `(x, valid)` where `valid:
(length,) bool` is True at real tokens and False at padding, or a pair `(x,
mask)` where `mask: (length, length) bool` is an explicit `[query, key]` mask
(init gets the matching pair of shapes, `((length, features), (length,))` or
`((length, features), (length, length))`).

Mask convention: True means "may attend", as Flax's masks,
`jax.nn.dot_product_attention` and `valid` above. PyTorch's `key_padding_mask`
and boolean `attn_mask` mean the opposite (True = masked out): port them with
`valid = ~key_padding_mask`, `mask = ~attn_mask`. Float additive masks are not
accepted.

Attention runs through `jax.nn.dot_product_attention`, so a backend with a
fused kernel (cuDNN flash attention on GPUs) can use it; dropout on attention
weights in training and float64 inputs take the explicit `attention_weights`
path, which gives the same numbers.
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
from fdl.nn.embedding import rotary_embedding
from fdl.nn.initializers import get_initializer
from fdl.nn.normalization import LayerNorm, RMSNorm

__all__ = ["MultiHeadSelfAttention", "TransformerEncoderBlock", "TransformerDecoderBlock",
           "attention_weights", "fused_attention"]


def split_inputs(kind: str, inputs):
    """`x` -> `(x, None, None)`; `(x, valid)` -> `(x, valid, None)`; `(x, mask)` -> `(x, None, mask)`.

    `valid` is told from `mask` by rank (1 vs 2); either must be bool.
    """
    if not isinstance(inputs, tuple):
        return inputs, None, None
    x, given = inputs
    if given.dtype != jnp.bool_:
        name = "valid" if given.ndim == 1 else "mask"
        meaning = "True = real token" if given.ndim == 1 else "True = may attend"
        raise TypeError(f"{kind}: {name} must be a bool array ({meaning}), got dtype {given.dtype} — "
                        "pass e.g. jnp.arange(length) < true_length, or ~key_padding_mask from PyTorch")
    return (x, given, None) if given.ndim == 1 else (x, None, given)


def split_input_shape(kind: str, input_shape) -> tuple[tuple[int, ...], bool]:
    """`(x_shape, has_mask)` from `(length, features)`, or the pair of shapes of `(x, valid)` or `(x, mask)`."""
    if not (input_shape and isinstance(input_shape[0], (tuple, list))):
        expect_sequence(kind, input_shape)
        return tuple(input_shape), False
    if len(input_shape) != 2:
        raise ShapeError(kind, f"expected the shapes of (x, valid), ((length, features), (length,)), "
                         f"got {input_shape}")
    x_shape, valid_shape = map(tuple, input_shape)
    expect_sequence(kind, x_shape)
    length = x_shape[0]
    if valid_shape not in (x_shape[:1], (length, length)):
        raise ShapeError(kind, f"the second input must be valid ({length},), one bool per token of x "
                         f"{x_shape}, or mask ({length}, {length}), [query, key]; got {valid_shape}")
    return x_shape, True


def allowed_pairs(length: int, causal: bool, valid, mask=None) -> jax.Array:
    """`(length, length)` bool, `[query, key]` True where the query may attend to the key."""
    allowed = jnp.ones((length, length), jnp.bool_)
    if causal:
        allowed = jnp.tril(allowed)
    if valid is not None:
        allowed = allowed & valid[None, :]
    if mask is not None:
        allowed = allowed & mask
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


def fused_attention(q, k, v, *, causal: bool, valid=None, mask=None, implementation=None):
    """Each head's `weights @ v` through `jax.nn.dot_product_attention`.

    The same numbers as `attention_weights` then `weights @ v` (logits and
    softmax in float32): a query with no allowed key gets zero outputs, where
    jax's kernel alone would average every value.

    Args:
      q, k, v: `(length, heads, head_dim)` queries, keys and values, one dtype.
      causal: mask future keys (passed as `is_causal`, which fused kernels skip).
      valid: `(length,)` bool, True at keys that may be attended, or None.
      mask: `(length, length)` bool, `[query, key]` True = may attend, or None.
      implementation: `jax.nn.dot_product_attention`'s: None (jax picks), "xla", "cudnn".

    Returns:
      `(length, heads, head_dim)` in v's dtype.
    """
    given = None if valid is None else valid[None, :]
    if mask is not None:
        given = mask if given is None else given & mask
    heads = jax.nn.dot_product_attention(q, k, v, mask=given, is_causal=causal,
                                         implementation=implementation)
    if given is None:  # every query may attend at least to itself
        return heads
    has_key = allowed_pairs(q.shape[0], causal, valid, mask).any(axis=-1)
    return jnp.where(has_key[:, None, None], heads, 0).astype(heads.dtype)


def _check_positive(kind: str, name: str, value, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{kind}: {name} must be a positive int, got {value!r}")


def MultiHeadSelfAttention(num_heads: int, *, head_dim: int | None = None,
                           out_features: int | None = None, causal: bool = False,
                           dropout_rate: float = 0.0, use_bias: bool = True, rotary: bool = False,
                           rotary_base: float = 10000.0, implementation: str | None = None,
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
    An explicit mask comes as `(x, mask)`, `mask: (length, length)` bool
    `[query, key]`, combined with `causal`; a query whose mask row allows no
    key gets zero head outputs (its output is the `out` bias), never NaN.

    Rotary position embeddings (`rotary=True`, RoPE): q and k of every head
    are rotated by their positions `0..length - 1` after the projection and
    before the scores, in GPT-NeoX's "rotate half" pairing (feature i with
    i + head_dim/2, as Hugging Face's Llama; see
    `fdl.nn.embedding.rotary_embedding` for the interleaved layout of
    RoFormer/Meta's Llama code and how to convert), so scores depend on
    positions only through their difference. Values are not rotated.

    The heads run through `jax.nn.dot_product_attention` (`fused_attention`),
    except when attention weights are dropped (`dropout_rate > 0` and
    `train=True`; fused kernels have no dropout) and for float64 inputs (the
    fused softmax runs in float32): those take `attention_weights`, with the
    same numbers.

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
      rotary: rotate q and k by rotary position embeddings (needs an even head_dim).
      rotary_base: RoPE's frequency base (10000 as in the paper and Llama 1/2), > 0.
      implementation: passed to `jax.nn.dot_product_attention`: None (jax
        picks; XLA today), "xla", or "cudnn" (GPU flash attention; float16 or
        bfloat16 only).
      w_init, b_init: initializers (see fdl.nn.initializers); each kernel is
        drawn as a 2-D `(fan_in, fan_out)` matrix, then reshaped.
      dtype: params dtype.

    Params (Flax's per-head layout): `query`, `key`, `value` each
    `{"w": (features, num_heads, head_dim), "b": (num_heads, head_dim)}`;
    `out` `{"w": (num_heads, head_dim, out_features), "b": (out_features,)}`.
    From PyTorch (`E = features`): `query.w = in_proj_weight[:E].T.reshape(E,
    num_heads, head_dim)`, `out.w = out_proj.weight.T.reshape(num_heads, head_dim, E)`.
    Input `x: (length, features)`, `(x, valid)` with `valid: (length,)` bool
    or `(x, mask)` with `mask: (length, length)` bool; output `(length,
    out_features)` in each case.

    Raises:
      ValueError: bad constructor arguments (constructor).
      ShapeError: an input that is not `(length, features)` (or the pair
        with `valid: (length,)` or `mask: (length, length)`), features not
        divisible by num_heads when `head_dim` is None, or an odd head_dim
        with `rotary` (init).
      TypeError: a `valid` or `mask` that is not bool (apply).
    """
    kind = "MultiHeadSelfAttention"
    _check_positive(kind, "num_heads", num_heads)
    _check_positive(kind, "head_dim", head_dim, optional=True)
    _check_positive(kind, "out_features", out_features, optional=True)
    if isinstance(dropout_rate, bool) or not isinstance(dropout_rate, (int, float)) \
            or not 0 <= dropout_rate < 1:
        raise ValueError(f"{kind}: dropout_rate is the drop probability and must be in [0, 1), "
                         f"got {dropout_rate!r}")
    if not rotary_base > 0:
        raise ValueError(f"{kind}: rotary_base must be > 0, got {rotary_base!r}")
    if implementation not in (None, "xla", "cudnn"):
        raise ValueError(f"{kind}: implementation must be None, 'xla' or 'cudnn' (jax.nn."
                         f"dot_product_attention's), got {implementation!r}")
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
        if rotary and heads[1] % 2:
            raise ShapeError(kind, f"rotary needs an even head_dim, got {heads[1]} — set head_dim "
                             f"to an even number or change num_heads")
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
        x, valid, mask = split_inputs(kind, inputs)
        q, k, v = (project(params[name], x, "lf,fhd->lhd") for name in ("query", "key", "value"))
        if rotary:
            q, k = rotary_embedding(q, base=rotary_base), rotary_embedding(k, base=rotary_base)
        if (dropout_rate > 0 and train) or q.dtype == jnp.float64:
            weights = attention_weights(q, k, allowed_pairs(x.shape[0], causal, valid, mask))
            if dropout_rate > 0:
                weights, _ = weight_dropout.apply({}, {}, weights, key=key, train=train)
            heads = jnp.einsum("hqk,khd->qhd", weights.astype(v.dtype), v)
        else:
            heads = fused_attention(q, k, v, causal=causal, valid=valid, mask=mask,
                                    implementation=implementation)
        y = project(params["out"], heads, "qhd,hdo->qo")
        if valid is not None:
            y = jnp.where(valid[:, None], y, 0)
        return y, state

    return Layer(init, apply, kind)


def _with_mask(attention: Layer, given) -> Layer:
    """`attention` taking `x` alone, with this call's `valid` or `mask` bound (used inside one apply only)."""

    def apply(params, state, x, *, key=None, train=False):
        return attention.apply(params, state, (x, given), key=key, train=train)

    return attention._replace(apply=apply)


NORMS = {"layer": LayerNorm, "rms": RMSNorm}


def _transformer_block(kind: str, num_heads: int, mlp_dim: int, *, dropout_rate: float,
                       causal: bool, norm_first: bool, activation, epsilon: float, norm: str,
                       rotary: bool, rotary_base: float, implementation) -> Layer:
    """The block both public constructors document; `kind` names it in errors."""
    _check_positive(kind, "mlp_dim", mlp_dim)
    if norm not in NORMS:
        raise ValueError(f"{kind}: norm must be 'layer' (LayerNorm) or 'rms' (RMSNorm), got {norm!r}")
    attention = MultiHeadSelfAttention(num_heads, causal=causal, dropout_rate=dropout_rate,
                                       rotary=rotary, rotary_base=rotary_base,
                                       implementation=implementation)
    act = Activation(activation)
    make_norm = NORMS[norm]

    def body(attention_layer: Layer, features: int) -> Layer:
        mlp = (Dense(mlp_dim), act, Dropout(dropout_rate), Dense(features), Dropout(dropout_rate))
        if norm_first:
            return serial(residual(make_norm(epsilon=epsilon), attention_layer, Dropout(dropout_rate)),
                          residual(make_norm(epsilon=epsilon), *mlp))
        return serial(residual(attention_layer, Dropout(dropout_rate)), make_norm(epsilon=epsilon),
                      residual(*mlp), make_norm(epsilon=epsilon))

    def init(key, input_shape):
        x_shape, has_mask = split_input_shape(kind, input_shape)
        try:
            _, params, state = body(attention, x_shape[-1]).init(key, x_shape)
        except ShapeError as error:
            raise error.within(kind) from None
        return ((x_shape, tuple(input_shape[1])) if has_mask else x_shape), params, state

    def apply(params, state, inputs, *, key=None, train=False):
        x, valid, mask = split_inputs(kind, inputs)
        given = valid if mask is None else mask
        bound = attention if given is None else _with_mask(attention, given)
        y, state = body(bound, x.shape[-1]).apply(params, state, x, key=key, train=train)
        return (y if given is None else (y, given)), state

    return Layer(init, apply, kind)


def TransformerEncoderBlock(num_heads: int, mlp_dim: int, *, dropout_rate: float = 0.1,
                            causal: bool = False, norm_first: bool = True,
                            activation="gelu", epsilon: float = 1e-5, norm: str = "layer",
                            rotary: bool = False, rotary_base: float = 10000.0,
                            implementation: str | None = None) -> Layer:
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

    Masks: the block takes `x`, `(x, valid)` or `(x, mask)` (see the module
    docstring). With a pair, each apply binds the second element into the
    attention child (the only position-mixing layer) and returns `(y, valid)`
    or `(y, mask)`, so blocks stack in `serial`; a final layer (e.g. masked
    pooling) consumes the pair. Output rows at padded positions are
    unspecified; real tokens never depend on them.

    Args:
      num_heads: attention heads; must divide the input's features.
      mlp_dim: hidden width of the MLP.
      dropout_rate: drop probability of every Dropout and of attention weights.
      causal: mask future positions in attention.
      norm_first: pre-norm (True) or post-norm (False).
      activation: the MLP's activation name or function; "gelu" is the exact
        erf form (fdl's, PyTorch's default gelu); GPT-2's is the tanh
        approximation, `functools.partial(fdl.nn.gelu, approximate=True)`.
      epsilon: the norms' epsilon (PyTorch's LayerNorm 1e-5).
      norm: "layer" (LayerNorm, params `layer_norm_*`) or "rms" (RMSNorm,
        params `rmsnorm_*`, as Llama).
      rotary, rotary_base, implementation: the attention's (see
        `MultiHeadSelfAttention`).

    Input `(length, features)`, `(x, valid)` or `(x, mask)`; output `(length,
    features)`, or `(y, valid)` / `(y, mask)` for a pair.

    Raises:
      ValueError: bad constructor arguments (constructor).
      ShapeError: a bad input shape or features not divisible by num_heads (init).
    """
    return _transformer_block("TransformerEncoderBlock", num_heads, mlp_dim,
                              dropout_rate=dropout_rate, causal=causal, norm_first=norm_first,
                              activation=activation, epsilon=epsilon, norm=norm, rotary=rotary,
                              rotary_base=rotary_base, implementation=implementation)


def TransformerDecoderBlock(num_heads: int, mlp_dim: int, *, dropout_rate: float = 0.1,
                            activation="gelu", epsilon: float = 1e-5, norm: str = "layer",
                            rotary: bool = False, rotary_base: float = 10000.0,
                            implementation: str | None = None) -> Layer:
    """A decoder-only (GPT) block: pre-norm, causal self-attention, MLP, residuals, dropout::

        serial(residual(LayerNorm, MultiHeadSelfAttention(causal=True), Dropout),
               residual(LayerNorm, Dense(mlp_dim), Activation, Dropout, Dense(features), Dropout))

    GPT-2's block (Radford et al. 2019), and with `norm="rms", rotary=True` the
    attention half of a Llama block (Llama's MLP is SwiGLU; here it is
    `Dense -> activation -> Dense`). There is no cross-attention: this is
    Keras-NLP's `TransformerDecoder` without an encoder sequence, not
    PyTorch's `TransformerDecoderLayer`. It is `TransformerEncoderBlock(...,
    causal=True, norm_first=True)` under its own name, with the same params
    (`block["residual_0"]["multi_head_self_attention_1"]["query"]["w"]`) and
    the same mask pairs (a padding `valid` or an explicit `mask` is combined
    with the causal mask).

    Args:
      num_heads: attention heads; must divide the input's features.
      mlp_dim: hidden width of the MLP (GPT-2: 4 x features).
      dropout_rate: drop probability of every Dropout and of attention weights
        (GPT-2: 0.1).
      activation: the MLP's activation name or function ("gelu" is the exact
        erf form; GPT-2's tanh form is `functools.partial(fdl.nn.gelu, approximate=True)`).
      epsilon: the norms' epsilon (GPT-2's LayerNorm 1e-5).
      norm: "layer" (LayerNorm) or "rms" (RMSNorm).
      rotary, rotary_base, implementation: the attention's (see
        `MultiHeadSelfAttention`).

    Input `(length, features)`, `(x, valid)` or `(x, mask)`; output `(length,
    features)`, or `(y, valid)` / `(y, mask)` for a pair.

    Raises:
      ValueError: bad constructor arguments (constructor).
      ShapeError: a bad input shape or features not divisible by num_heads (init).
    """
    return _transformer_block("TransformerDecoderBlock", num_heads, mlp_dim,
                              dropout_rate=dropout_rate, causal=True, norm_first=True,
                              activation=activation, epsilon=epsilon, norm=norm, rotary=rotary,
                              rotary_base=rotary_base, implementation=implementation)
