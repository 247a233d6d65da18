"""Recurrent layers: SimpleRNN, LSTM and GRU, scanned over one sequence.

One example is a sequence `x: (length, features)`; the layer runs `lax.scan`
over time from a zero initial state. The input projection `x @ w_i + b` of
every time step is one matmul before the scan, so each scan step only does
the recurrent matmul `h @ w_h` (the step is the sequential, slow part).

Conventions (chosen to port weights from PyTorch and Keras unchanged):
  * Gate blocks are stacked along the last axis of `w_i: (features, gates *
    hidden)`, `w_h: (hidden, gates * hidden)` and the biases, in PyTorch's
    order: LSTM (i, f, g, o) (Keras' i, f, c, o is the same order), GRU
    (r, z, n). PyTorch stores `weight_ih_l0` as `(gates * hidden, features)`:
    `w_i = weight_ih_l0.T`, `w_h = weight_hh_l0.T`.
  * Initializers (Keras' defaults): `w_i` glorot_uniform, `w_h` orthogonal,
    biases zeros, each gate's `(rows, hidden)` block drawn separately (as
    Flax; Keras draws the whole `(rows, gates * hidden)` kernel at once).
  * Output: `(length, hidden)` with `return_sequences`, else `(hidden,)`, the
    state after the last step. `bidirectional=True` runs a second layer over
    the reversed sequence and concatenates `[forward, backward]` features
    (`2 * hidden`); backward's output at step t has read x[t:] (reversed back
    into input order, as Keras' Bidirectional), so its last output is the
    state after reading the whole reversed sequence, i.e. its step-0 output.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fdl.nn.activations import get_activation
from fdl.nn.core import Layer, expect_sequence
from fdl.nn.initializers import get_initializer

__all__ = ["SimpleRNN", "LSTM", "GRU"]


class Cell(NamedTuple):
    """One recurrent cell type.

    Attributes:
      kind: display name, e.g. "LSTM".
      gates: number of `hidden`-wide blocks in `w_i`, `w_h` and the biases.
      biases: bias names; the first is added to the input projection.
      zero_carry: `(hidden, dtype) -> carry`, the initial state.
      step: `(params, carry, projected_t) -> (carry, h_t)`, a scan body, where
        `projected_t: (gates * hidden,)` is `x_t @ w_i + params[biases[0]]`.
    """

    kind: str
    gates: int
    biases: tuple[str, ...]
    zero_carry: Callable[[int, Any], Any]
    step: Callable


def _zeros(hidden, dtype):
    return jnp.zeros((hidden,), dtype)


def _simple_cell(activation: Callable) -> Cell:
    def step(params, h, projected_t):
        h = activation(projected_t + h @ params["w_h"])
        return h, h

    return Cell("SimpleRNN", 1, ("b",), _zeros, step)


def _lstm_step(params, carry, projected_t):
    h, c = carry
    i, f, g, o = jnp.split(projected_t + h @ params["w_h"], 4)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def _gru_step(params, h, projected_t):
    x_r, x_z, x_n = jnp.split(projected_t, 3)
    h_r, h_z, h_n = jnp.split(h @ params["w_h"] + params["b_h"], 3)
    r = jax.nn.sigmoid(x_r + h_r)
    z = jax.nn.sigmoid(x_z + h_z)
    n = jnp.tanh(x_n + r * h_n)  # reset after the recurrent matmul (PyTorch, Keras v2)
    h = (1 - z) * n + z * h
    return h, h


LSTM_CELL = Cell("LSTM", 4, ("b",), lambda hidden, dtype: (_zeros(hidden, dtype),) * 2, _lstm_step)
GRU_CELL = Cell("GRU", 3, ("b_i", "b_h"), _zeros, _gru_step)


def _per_gate(initializer, key, rows: int, hidden: int, gates: int, dtype):
    """A `(rows, gates * hidden)` kernel, each gate's `(rows, hidden)` block drawn apart."""
    keys = jax.random.split(key, gates)
    return jnp.concatenate([initializer(k, (rows, hidden), dtype) for k in keys], axis=1)


def _scan(cell: Cell, params, x, reverse: bool):
    """The cell's outputs `(length, hidden)` over `x: (length, features)`, in input order."""
    projected = x @ params["w_i"] + params[cell.biases[0]]
    hidden = params["w_h"].shape[0]
    _, hs = lax.scan(lambda carry, p: cell.step(params, carry, p),
                     cell.zero_carry(hidden, projected.dtype), projected, reverse=reverse)
    return hs


def _recurrent(cell: Cell, hidden: int, *, return_sequences: bool, bidirectional: bool,
               w_init, recurrent_init, b_init, dtype) -> Layer:
    """The Layer running `cell` over a sequence (see the module docstring)."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{cell.kind}: hidden must be a positive int, got {hidden!r}")
    w_initializer = get_initializer(w_init, owner=f"{cell.kind} w_init")
    recurrent_initializer = get_initializer(recurrent_init, owner=f"{cell.kind} recurrent_init")
    b_initializer = get_initializer(b_init, owner=f"{cell.kind} b_init")
    width = cell.gates * hidden

    def init_direction(key, features):
        w_key, h_key, *b_keys = jax.random.split(key, 2 + len(cell.biases))
        params = {"w_i": _per_gate(w_initializer, w_key, features, hidden, cell.gates, dtype),
                  "w_h": _per_gate(recurrent_initializer, h_key, hidden, hidden, cell.gates, dtype)}
        for name, b_key in zip(cell.biases, b_keys):
            params[name] = b_initializer(b_key, (width,), dtype)
        return params

    def init(key, input_shape):
        expect_sequence(cell.kind, input_shape)
        length, features = input_shape
        if bidirectional:
            forward_key, backward_key = jax.random.split(key)
            params = {"forward": init_direction(forward_key, features),
                      "backward": init_direction(backward_key, features)}
        else:
            params = init_direction(key, features)
        out_features = 2 * hidden if bidirectional else hidden
        return ((length, out_features) if return_sequences else (out_features,)), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        if not bidirectional:
            hs = _scan(cell, params, x, reverse=False)
            return (hs if return_sequences else hs[-1]), state
        forward = _scan(cell, params["forward"], x, reverse=False)
        backward = _scan(cell, params["backward"], x, reverse=True)
        if return_sequences:
            return jnp.concatenate([forward, backward], axis=-1), state
        return jnp.concatenate([forward[-1], backward[0]]), state

    return Layer(init, apply, cell.kind)


def SimpleRNN(hidden: int, *, activation="tanh", return_sequences: bool = False,
              bidirectional: bool = False, w_init="glorot_uniform", recurrent_init="orthogonal",
              b_init="zeros", dtype=jnp.float32) -> Layer:
    """Elman RNN: `h_t = activation(x_t @ w_i + b + h_{t-1} @ w_h)`, `h_0 = 0`.

    PyTorch's `nn.RNN` has two biases; port with `b = bias_ih_l0 + bias_hh_l0`.

    Args:
      hidden: state width.
      activation: name or function (see fdl.nn.activations), default tanh.
      return_sequences: output every step's state, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and `b`.
      dtype: params dtype.

    Params: `w_i: (features, hidden)`, `w_h: (hidden, hidden)`, `b: (hidden,)`;
    bidirectional nests them under "forward" and "backward".
    Input `(length, features)`; output `(length, hidden)` with
    `return_sequences`, else `(hidden,)` (`2 * hidden` if bidirectional).

    Raises:
      ValueError: a bad `hidden`, activation or initializer name (constructor).
      ShapeError: an input that is not `(length, features)` (init).
    """
    cell = _simple_cell(get_activation(activation))
    return _recurrent(cell, hidden, return_sequences=return_sequences, bidirectional=bidirectional,
                      w_init=w_init, recurrent_init=recurrent_init, b_init=b_init, dtype=dtype)


def LSTM(hidden: int, *, return_sequences: bool = False, bidirectional: bool = False,
         unit_forget_bias: bool = True, w_init="glorot_uniform", recurrent_init="orthogonal",
         b_init="zeros", dtype=jnp.float32) -> Layer:
    """Long short-term memory, gate order (i, f, g, o) as PyTorch and Keras.

    With `[i, f, g, o] = x_t @ w_i + h_{t-1} @ w_h + b` split in four::

        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    from `(h_0, c_0) = (0, 0)`; the carry is the pair `(h, c)` in that order,
    as PyTorch's and Keras' returned states. One bias, as Keras: port PyTorch's
    two with `b = bias_ih_l0 + bias_hh_l0`.

    Args:
      hidden: state width.
      return_sequences: output every step's `h`, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      unit_forget_bias: initialize the forget gate's bias block `b[hidden:2 *
        hidden]` to 1 (Keras' default, Jozefowicz et al. 2015), so the cell
        remembers at the start of training; PyTorch has no such option.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and `b`.
      dtype: params dtype.

    Params: `w_i: (features, 4 * hidden)`, `w_h: (hidden, 4 * hidden)`,
    `b: (4 * hidden,)`; bidirectional nests them under "forward" and "backward".
    Input `(length, features)`; output `(length, hidden)` with
    `return_sequences`, else `(hidden,)` (`2 * hidden` if bidirectional).

    Raises:
      ValueError: a bad `hidden` or initializer name (constructor).
      ShapeError: an input that is not `(length, features)` (init).
    """
    if unit_forget_bias:
        b_init = _forget_bias_one(get_initializer(b_init, owner="LSTM b_init"), hidden)
    return _recurrent(LSTM_CELL, hidden, return_sequences=return_sequences,
                      bidirectional=bidirectional, w_init=w_init, recurrent_init=recurrent_init,
                      b_init=b_init, dtype=dtype)


def _forget_bias_one(b_initializer, hidden: int):
    """`b_initializer` with the forget block (the second of four) set to 1."""

    def initializer(key, shape, dtype):
        return b_initializer(key, shape, dtype).at[hidden:2 * hidden].set(1)

    return initializer


def GRU(hidden: int, *, return_sequences: bool = False, bidirectional: bool = False,
        w_init="glorot_uniform", recurrent_init="orthogonal", b_init="zeros",
        dtype=jnp.float32) -> Layer:
    """Gated recurrent unit, "reset after" form, gate order (r, z, n) as PyTorch.

    With `[x_r, x_z, x_n] = x_t @ w_i + b_i` and
    `[h_r, h_z, h_n] = h_{t-1} @ w_h + b_h`::

        r = sigmoid(x_r + h_r);  z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)          # reset applied after the matmul
        h_t = (1 - z) * n + z * h_{t-1}

    from `h_0 = 0`. This is PyTorch's `nn.GRU` and Keras' `GRU(reset_after=True)`
    (the v2 default): port with `b_i = bias_ih_l0`, `b_h = bias_hh_l0` (Keras:
    `b_i, b_h = bias`). Keras' gate order is (z, r, n): swap the first two
    blocks. Keras v1's `reset_after=False`, `tanh(x_n + (r * h) @ w_hn)`, is
    not this layer.

    Args:
      hidden: state width.
      return_sequences: output every step's state, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and both biases.
      dtype: params dtype.

    Params: `w_i: (features, 3 * hidden)`, `w_h: (hidden, 3 * hidden)`,
    `b_i: (3 * hidden,)`, `b_h: (3 * hidden,)`; bidirectional nests them under
    "forward" and "backward".
    Input `(length, features)`; output `(length, hidden)` with
    `return_sequences`, else `(hidden,)` (`2 * hidden` if bidirectional).

    Raises:
      ValueError: a bad `hidden` or initializer name (constructor).
      ShapeError: an input that is not `(length, features)` (init).
    """
    return _recurrent(GRU_CELL, hidden, return_sequences=return_sequences,
                      bidirectional=bidirectional, w_init=w_init, recurrent_init=recurrent_init,
                      b_init=b_init, dtype=dtype)
