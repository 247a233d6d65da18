"""Combinators: layers built from layers.

Every combinator is itself a `Layer`. Children's params and state are keyed by
readable names: the user's (`named("encoder", layer)`) or `<kind>_<position>`
(`dense_0`, `relu_1`, `dense_2`). Child `i` gets the key `fold_in(key, i)` at
init and apply, so adding randomness to one child never changes another's.
"""
from __future__ import annotations

import jax.numpy as jnp

from fdl.nn.core import Layer, ShapeError, child_key, init_child, snake_case

__all__ = ["serial", "parallel", "residual", "FanInSum", "FanInConcat"]


def child_names(combinator: str, layers: tuple[Layer, ...]) -> list[str]:
    """The params/state key of each child; raises on a duplicate user name."""
    if not layers:
        raise ValueError(f"{combinator}: needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{combinator}[{i}]: expected a Layer, got {type(layer).__name__} — "
                "did you pass the constructor without calling it, e.g. Relu instead of Relu()?"
            )
    names = [layer.name or f"{snake_case(layer.kind)}_{i}" for i, layer in enumerate(layers)]
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f"{combinator}: two children are named {name!r} — give each a unique name")
        seen.add(name)
    return names


def serial(*layers: Layer) -> Layer:
    """Layers applied one after another: `serial(f, g)(x) = g(f(x))`."""
    names = child_names("serial", layers)

    def init(key, input_shape):
        params, state, shape = {}, {}, input_shape
        for i, (name, layer) in enumerate(zip(names, layers)):
            shape, params[name], state[name] = init_child("serial", i, name, layer, key, shape)
        return shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        new_state = {}
        for i, (name, layer) in enumerate(zip(names, layers)):
            x, new_state[name] = layer.apply(
                params[name], state[name], x, key=child_key(key, i), train=train)
        return x, new_state

    return Layer(init, apply, "Serial")


def parallel(*layers: Layer) -> Layer:
    """Every layer sees the same input; the output is the tuple of their outputs."""
    names = child_names("parallel", layers)

    def init(key, input_shape):
        params, state, shapes = {}, {}, []
        for i, (name, layer) in enumerate(zip(names, layers)):
            shape, params[name], state[name] = init_child("parallel", i, name, layer, key, input_shape)
            shapes.append(shape)
        return tuple(shapes), params, state

    def apply(params, state, x, *, key=None, train=False):
        outputs, new_state = [], {}
        for i, (name, layer) in enumerate(zip(names, layers)):
            y, new_state[name] = layer.apply(
                params[name], state[name], x, key=child_key(key, i), train=train)
            outputs.append(y)
        return tuple(outputs), new_state

    return Layer(init, apply, "Parallel")


def residual(*layers: Layer) -> Layer:
    """`x + serial(*layers)(x)`; the body must keep the input's shape."""
    body = serial(*layers)

    def init(key, input_shape):
        try:
            output_shape, params, state = body.init(key, input_shape)
        except ShapeError as error:
            raise error.within("residual") from None
        if tuple(output_shape) != tuple(input_shape):
            raise ShapeError("Residual", f"the body maps {tuple(input_shape)} to {tuple(output_shape)}, "
                             "but x + body(x) needs them equal — project the skip path or end the "
                             "body with a layer of the input's width")
        return input_shape, params, state

    def apply(params, state, x, *, key=None, train=False):
        y, state = body.apply(params, state, x, key=key, train=train)
        return x + y, state

    return Layer(init, apply, "Residual")


def _fan_in(kind: str, combine, combine_shapes) -> Layer:
    def init(key, input_shape):
        del key
        if not input_shape or not all(isinstance(s, tuple) for s in input_shape):
            raise ShapeError(kind, f"expected a tuple of input shapes (the output of parallel), got "
                             f"{input_shape} — put parallel(...) before {kind}")
        return combine_shapes(input_shape), {}, {}

    def apply(params, state, xs, *, key=None, train=False):
        del params, key, train
        return combine(xs), state

    return Layer(init, apply, kind)


def FanInSum() -> Layer:
    """Sums a tuple of same-shaped inputs (e.g. the branches of `parallel`)."""

    def shapes(input_shapes):
        if len(set(map(tuple, input_shapes))) != 1:
            raise ShapeError("FanInSum", f"branches must have equal shapes, got {list(input_shapes)} — "
                             "make the branches agree or use FanInConcat")
        return tuple(input_shapes[0])

    return _fan_in("FanInSum", lambda xs: sum(xs[1:], xs[0]), shapes)


def FanInConcat(axis: int = -1) -> Layer:
    """Concatenates a tuple of inputs along per-example `axis` (default: channels)."""

    def shapes(input_shapes):
        ranks = {len(s) for s in input_shapes}
        if len(ranks) != 1:
            raise ShapeError("FanInConcat", f"branches must have equal rank, got {list(input_shapes)}")
        rank = ranks.pop()
        ax = axis % rank
        rest = {tuple(d for j, d in enumerate(s) if j != ax) for s in input_shapes}
        if len(rest) != 1:
            raise ShapeError("FanInConcat", f"branches may differ only on axis {axis}, got "
                             f"{list(input_shapes)}")
        out = list(input_shapes[0])
        out[ax] = sum(s[ax] for s in input_shapes)
        return tuple(out)

    return _fan_in("FanInConcat", lambda xs: jnp.concatenate(xs, axis=axis), shapes)
