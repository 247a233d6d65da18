"""Recurrent layers: SimpleRNN, LSTM and GRU, scanned over one sequence.

One example is a sequence `x: (length, features)`; the layer runs `lax.scan`
over time from a zero initial state (or a given one, below). The input
projection `x @ w_i + b` of every time step is one matmul before the scan, so
each scan step only does the recurrent matmul `h @ w_h` (the step is the
sequential, slow part).

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

States (PyTorch's `h_0`/`h_n` and Keras' `initial_state`/`return_state`):
  * One direction's state is `h: (hidden,)` for SimpleRNN and GRU and the
    pair `(h, c)`, each `(hidden,)`, for LSTM (PyTorch's order; Keras returns
    the same two as `[output, h, c]`). A bidirectional layer's state is the
    pair `(forward, backward)` of those, e.g. `((h_f, c_f), (h_b, c_b))`:
    a one-layer PyTorch model's `((h_n[0], c_n[0]), (h_n[1], c_n[1]))` (PyTorch
    stacks the directions on a leading axis; Keras' Bidirectional returns them
    flat, `[output, h_f, c_f, h_b, c_b]`).
  * `return_state=True`: the output is the tuple `(outputs, final_state)`,
    `outputs` as above, and init's output shape is the tuple of their shapes,
    e.g. `((hidden,), ((hidden,), (hidden,)))` for an LSTM. The forward
    final state is the state after x[-1]; the backward one is the state
    after reading the reversed sequence down to x[0] (PyTorch's `h_n[1]`).
  * `initial_state=True`: the input is the pair `(sequence, initial_state)`,
    e.g. `(x, h0)` or `(x, (h0, c0))` with `h0: (hidden,)` per example
    (batched: `(batch, hidden)`), laid out as the final state, so one layer's
    `final_state` is another's initial state as it is (an encoder-decoder);
    init takes the pair of shapes, e.g. `((length, features), (hidden,))`.
    The backward direction starts from its state before x[-1].
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from fdl.nn.activations import get_activation
from fdl.nn.core import Layer, ShapeError, expect_sequence
from fdl.nn.initializers import get_initializer

__all__ = ["SimpleRNN", "LSTM", "GRU"]


class Cell(NamedTuple):
    """One recurrent cell type.

    Attributes:
      kind: display name, e.g. "LSTM".
      gates: number of `hidden`-wide blocks in `w_i`, `w_h` and the biases.
      biases: bias names; the first is added to the input projection.
      carry_shape: `hidden -> ` the shapes of the carry, `(hidden,)` or a tuple of them.
      carry_names: the carry's fields as the docs name them, "h" or "(h, c)".
      step: `(params, carry, projected_t) -> (carry, h_t)`, a scan body, where
        `projected_t: (gates * hidden,)` is `x_t @ w_i + params[biases[0]]`.
    """

    kind: str
    gates: int
    biases: tuple[str, ...]
    carry_shape: Callable[[int], Any]
    carry_names: str
    step: Callable


def _hidden_shape(hidden: int) -> tuple[int]:
    return (hidden,)


def _is_shape(value) -> bool:
    return isinstance(value, tuple) and all(isinstance(d, int) and not isinstance(d, bool) for d in value)


def _as_tuples(value):
    """`value` with every list a tuple, so shapes given as lists compare equal to tuples."""
    return tuple(map(_as_tuples, value)) if isinstance(value, (list, tuple)) else value


def _simple_cell(activation: Callable) -> Cell:
    def step(params, h, projected_t):
        h = activation(projected_t + h @ params["w_h"])
        return h, h

    return Cell("SimpleRNN", 1, ("b",), _hidden_shape, "h", step)


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


LSTM_CELL = Cell("LSTM", 4, ("b",), lambda hidden: ((hidden,), (hidden,)), "(h, c)", _lstm_step)
GRU_CELL = Cell("GRU", 3, ("b_i", "b_h"), _hidden_shape, "h", _gru_step)


def _per_gate(initializer, key, rows: int, hidden: int, gates: int, dtype):
    """A `(rows, gates * hidden)` kernel, each gate's `(rows, hidden)` block drawn apart."""
    keys = jax.random.split(key, gates)
    return jnp.concatenate([initializer(k, (rows, hidden), dtype) for k in keys], axis=1)


def _scan(cell: Cell, params, x, initial, reverse: bool):
    """`(final carry, outputs (length, hidden) in input order)` over `x: (length, features)`.

    The scan starts from `initial` (the carry's layout; None for zeros), cast to
    the computation's dtype so the carry keeps one dtype through the scan.
    """
    projected = x @ params["w_i"] + params[cell.biases[0]]
    zeros = jax.tree.map(lambda shape: jnp.zeros(shape, projected.dtype),
                         cell.carry_shape(params["w_h"].shape[0]), is_leaf=_is_shape)
    if initial is None:
        carry = zeros
    else:  # zeros' tree structure: an LSTM state given as a list [h0, c0] scans as the tuple
        leaves = [jnp.asarray(leaf).astype(projected.dtype) for leaf in jax.tree.leaves(initial)]
        carry = jax.tree.unflatten(jax.tree.structure(zeros), leaves)
    return lax.scan(lambda carry, p: cell.step(params, carry, p), carry, projected, reverse=reverse)


def _recurrent(cell: Cell, hidden: int, *, return_sequences: bool, bidirectional: bool,
               initial_state: bool, return_state: bool, w_init, recurrent_init, b_init,
               dtype) -> Layer:
    """The Layer running `cell` over a sequence (see the module docstring)."""
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"{cell.kind}: hidden must be a positive int, got {hidden!r}")
    w_initializer = get_initializer(w_init, owner=f"{cell.kind} w_init")
    recurrent_initializer = get_initializer(recurrent_init, owner=f"{cell.kind} recurrent_init")
    b_initializer = get_initializer(b_init, owner=f"{cell.kind} b_init")
    width = cell.gates * hidden
    # One example's state: one direction's carry, or the (forward, backward) pair of them.
    state_shape = cell.carry_shape(hidden)
    state_names = cell.carry_names
    if bidirectional:
        state_shape = (state_shape, state_shape)
        state_names = f"(forward {state_names}, backward {state_names})"

    def sequence_shape(input_shape):
        """The `(length, features)` part of the input shape, the initial state's checked."""
        shape = _as_tuples(input_shape)
        is_pair = len(shape) == 2 and isinstance(shape[0], tuple)
        if not initial_state:
            if shape and isinstance(shape[0], tuple):
                raise ShapeError(cell.kind, f"expected input (length, features), got the tuple of "
                                 f"shapes {shape} — to pass an initial state with the sequence, "
                                 "construct the layer with initial_state=True")
            expect_sequence(cell.kind, shape)
            return shape
        pair = f"(sequence, {state_names})"
        if not is_pair:
            raise ShapeError(cell.kind, f"initial_state=True: expected input {pair} with shapes "
                             f"((length, features), {state_shape}), got {shape} — pass the sequence "
                             "and the initial state as a pair, or drop initial_state=True")
        sequence, initial = shape
        try:
            expect_sequence(cell.kind, sequence)
        except ShapeError as error:
            raise ShapeError(cell.kind, f"the sequence of {pair}: {error.detail}") from None
        if initial != state_shape:
            fields = cell.carry_names.strip("()").split(", ")
            each = f"{' and '.join(fields)} {'are' if len(fields) > 1 else 'is'}"
            raise ShapeError(cell.kind, f"initial_state=True: expected the initial state "
                             f"{state_names} with shapes {state_shape}, got {initial} — per "
                             f"example, {each} (hidden,) = ({hidden},)")
        return sequence

    def init_direction(key, features):
        w_key, h_key, *b_keys = jax.random.split(key, 2 + len(cell.biases))
        params = {"w_i": _per_gate(w_initializer, w_key, features, hidden, cell.gates, dtype),
                  "w_h": _per_gate(recurrent_initializer, h_key, hidden, hidden, cell.gates, dtype)}
        for name, b_key in zip(cell.biases, b_keys):
            params[name] = b_initializer(b_key, (width,), dtype)
        return params

    def init(key, input_shape):
        length, features = sequence_shape(input_shape)
        if bidirectional:
            forward_key, backward_key = jax.random.split(key)
            params = {"forward": init_direction(forward_key, features),
                      "backward": init_direction(backward_key, features)}
        else:
            params = init_direction(key, features)
        out_features = 2 * hidden if bidirectional else hidden
        out_shape = (length, out_features) if return_sequences else (out_features,)
        return ((out_shape, state_shape) if return_state else out_shape), params, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        x, initial = x if initial_state else (x, None)
        if not bidirectional:
            final, hs = _scan(cell, params, x, initial, reverse=False)
            outputs = hs if return_sequences else hs[-1]
        else:
            forward_initial, backward_initial = (None, None) if initial is None else initial
            forward_final, forward = _scan(cell, params["forward"], x, forward_initial, reverse=False)
            backward_final, backward = _scan(cell, params["backward"], x, backward_initial, reverse=True)
            final = (forward_final, backward_final)
            outputs = (jnp.concatenate([forward, backward], axis=-1) if return_sequences
                       else jnp.concatenate([forward[-1], backward[0]]))
        return ((outputs, final) if return_state else outputs), state

    return Layer(init, apply, cell.kind)


def SimpleRNN(hidden: int, *, activation="tanh", return_sequences: bool = False,
              bidirectional: bool = False, initial_state: bool = False, return_state: bool = False,
              w_init="glorot_uniform", recurrent_init="orthogonal", b_init="zeros",
              dtype=jnp.float32) -> Layer:
    """Elman RNN: `h_t = activation(x_t @ w_i + b + h_{t-1} @ w_h)`, `h_0 = 0` unless given.

    PyTorch's `nn.RNN` has two biases; port with `b = bias_ih_l0 + bias_hh_l0`.

    Args:
      hidden: state width.
      activation: name or function (see fdl.nn.activations), default tanh.
      return_sequences: output every step's state, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      initial_state: take the input as the pair `(sequence, h0)`, `h0: (hidden,)`
        (bidirectional: `(sequence, (h0_forward, h0_backward))`), not start from zeros.
      return_state: output `(outputs, h_final)` (bidirectional: `(outputs,
        (h_forward, h_backward))`); see the module docstring.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and `b`.
      dtype: params dtype.

    Params: `w_i: (features, hidden)`, `w_h: (hidden, hidden)`, `b: (hidden,)`;
    bidirectional nests them under "forward" and "backward".
    Input `(length, features)` (with `initial_state`, the pair of it and the
    state); output `(length, hidden)` with `return_sequences`, else `(hidden,)`
    (`2 * hidden` if bidirectional), paired with the final state with `return_state`.

    Raises:
      ValueError: a bad `hidden`, activation or initializer name (constructor).
      ShapeError: an input that is not `(length, features)`, or with
        `initial_state` not `(sequence, state)` of the shapes above (init).
    """
    cell = _simple_cell(get_activation(activation))
    return _recurrent(cell, hidden, return_sequences=return_sequences, bidirectional=bidirectional,
                      initial_state=initial_state, return_state=return_state, w_init=w_init,
                      recurrent_init=recurrent_init, b_init=b_init, dtype=dtype)


def LSTM(hidden: int, *, return_sequences: bool = False, bidirectional: bool = False,
         initial_state: bool = False, return_state: bool = False, unit_forget_bias: bool = True,
         w_init="glorot_uniform", recurrent_init="orthogonal", b_init="zeros",
         dtype=jnp.float32) -> Layer:
    """Long short-term memory, gate order (i, f, g, o) as PyTorch and Keras.

    With `[i, f, g, o] = x_t @ w_i + h_{t-1} @ w_h + b` split in four::

        c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
        h_t = sigmoid(o) * tanh(c_t)

    from `(h_0, c_0) = (0, 0)` unless given (`initial_state`); the carry is
    the pair `(h, c)` in that order, as PyTorch's and Keras' returned states.
    One bias, as Keras: port PyTorch's two with `b = bias_ih_l0 + bias_hh_l0`.

    Args:
      hidden: state width.
      return_sequences: output every step's `h`, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      initial_state: take the input as the pair `(sequence, (h0, c0))`, each
        `(hidden,)` (bidirectional: `(sequence, ((h0_f, c0_f), (h0_b, c0_b)))`),
        not start from zeros.
      return_state: output `(outputs, (h, c))`, the final state in PyTorch's
        order (bidirectional: `(outputs, ((h_f, c_f), (h_b, c_b)))`); see the
        module docstring.
      unit_forget_bias: initialize the forget gate's bias block `b[hidden:2 *
        hidden]` to 1 (Keras' default, Jozefowicz et al. 2015), so the cell
        remembers at the start of training; PyTorch has no such option.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and `b`.
      dtype: params dtype.

    Params: `w_i: (features, 4 * hidden)`, `w_h: (hidden, 4 * hidden)`,
    `b: (4 * hidden,)`; bidirectional nests them under "forward" and "backward".
    Input `(length, features)` (with `initial_state`, the pair of it and the
    state); output `(length, hidden)` with `return_sequences`, else `(hidden,)`
    (`2 * hidden` if bidirectional), paired with the final state with `return_state`.

    Raises:
      ValueError: a bad `hidden` or initializer name (constructor).
      ShapeError: an input that is not `(length, features)`, or with
        `initial_state` not `(sequence, state)` of the shapes above (init).
    """
    if unit_forget_bias:
        b_init = _forget_bias_one(get_initializer(b_init, owner="LSTM b_init"), hidden)
    return _recurrent(LSTM_CELL, hidden, return_sequences=return_sequences,
                      bidirectional=bidirectional, initial_state=initial_state,
                      return_state=return_state, w_init=w_init, recurrent_init=recurrent_init,
                      b_init=b_init, dtype=dtype)


def _forget_bias_one(b_initializer, hidden: int):
    """`b_initializer` with the forget block (the second of four) set to 1."""

    def initializer(key, shape, dtype):
        return b_initializer(key, shape, dtype).at[hidden:2 * hidden].set(1)

    return initializer


def GRU(hidden: int, *, return_sequences: bool = False, bidirectional: bool = False,
        initial_state: bool = False, return_state: bool = False, w_init="glorot_uniform",
        recurrent_init="orthogonal", b_init="zeros", dtype=jnp.float32) -> Layer:
    """Gated recurrent unit, "reset after" form, gate order (r, z, n) as PyTorch.

    With `[x_r, x_z, x_n] = x_t @ w_i + b_i` and
    `[h_r, h_z, h_n] = h_{t-1} @ w_h + b_h`::

        r = sigmoid(x_r + h_r);  z = sigmoid(x_z + h_z)
        n = tanh(x_n + r * h_n)          # reset applied after the matmul
        h_t = (1 - z) * n + z * h_{t-1}

    from `h_0 = 0` unless given (`initial_state`). This is PyTorch's `nn.GRU`
    and Keras' `GRU(reset_after=True)` (the v2 default): port with `b_i = bias_ih_l0`, `b_h = bias_hh_l0` (Keras:
    `b_i, b_h = bias`). Keras' gate order is (z, r, n): swap the first two
    blocks. Keras v1's `reset_after=False`, `tanh(x_n + (r * h) @ w_hn)`, is
    not this layer.

    Args:
      hidden: state width.
      return_sequences: output every step's state, not only the last.
      bidirectional: also run over the reversed sequence and concatenate.
      initial_state: take the input as the pair `(sequence, h0)`, `h0: (hidden,)`
        (bidirectional: `(sequence, (h0_forward, h0_backward))`), not start from zeros.
      return_state: output `(outputs, h_final)` (bidirectional: `(outputs,
        (h_forward, h_backward))`); see the module docstring.
      w_init, recurrent_init, b_init: initializers of `w_i`, `w_h` and both biases.
      dtype: params dtype.

    Params: `w_i: (features, 3 * hidden)`, `w_h: (hidden, 3 * hidden)`,
    `b_i: (3 * hidden,)`, `b_h: (3 * hidden,)`; bidirectional nests them under
    "forward" and "backward".
    Input `(length, features)` (with `initial_state`, the pair of it and the
    state); output `(length, hidden)` with `return_sequences`, else `(hidden,)`
    (`2 * hidden` if bidirectional), paired with the final state with `return_state`.

    Raises:
      ValueError: a bad `hidden` or initializer name (constructor).
      ShapeError: an input that is not `(length, features)`, or with
        `initial_state` not `(sequence, state)` of the shapes above (init).
    """
    return _recurrent(GRU_CELL, hidden, return_sequences=return_sequences,
                      bidirectional=bidirectional, initial_state=initial_state,
                      return_state=return_state, w_init=w_init, recurrent_init=recurrent_init,
                      b_init=b_init, dtype=dtype)
