"""`summary`: a Keras-style table of a model's layers, shapes and parameter counts; `output_shape`."""
from __future__ import annotations

import math

import jax

from fdl.nn import core

__all__ = ["output_shape", "summary", "summary_rows"]


def _count(params) -> int:
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params))


def output_shape(model: core.Layer, input_shape) -> tuple:
    """The model's per-example output shape, worked out abstractly (`jax.eval_shape`): no
    parameters are allocated. A model with several outputs gives a tuple of shapes.

    Raises:
      ShapeError: the model does not accept `input_shape` (the message names the layer path).
    """
    box = {}

    def init():  # the key is made inside the trace: nothing runs eagerly
        box["shape"], params, _ = model.init(jax.random.key(0), core.as_shape(input_shape))
        return params

    jax.eval_shape(init)
    return box["shape"]


def summary_rows(model: core.Layer, input_shape) -> list[tuple[str, str, tuple, int]]:
    """(path, kind, output_shape, parameter count) for the model and every child, pre-order.

    Runs `init` abstractly (`jax.eval_shape`): no parameters are allocated.
    """
    record: list = []
    shapes = {}

    def init():
        shapes["model"], params, state = model.init(jax.random.key(0), core.as_shape(input_shape))
        return params, state

    token = core._INIT_RECORD.set(record)
    try:
        params, _ = jax.eval_shape(init)
    finally:
        core._INIT_RECORD.reset(token)
    rows = [("/".join(path), kind, shape, _count(p)) for path, kind, shape, p in record]
    return [("(model)", model.kind, shapes["model"], _count(params))] + rows


def summary(model: core.Layer, input_shape) -> str:
    """The table as text: layer path, kind, output shape and parameters, with the total.

    Args:
      model: any Layer.
      input_shape: per-example input shape, e.g. (40, 1).

    Returns:
      The table (also what `fdl summary CONFIG` prints). Nested rows are indented
      by their path; the first row is the whole model and its total.
    """
    rows = summary_rows(model, input_shape)
    (_, kind, out_shape, total), children = rows[0], rows[1:]
    lines = [(path, k, str(shape), f"{count:,}") for path, k, shape, count in children]
    header = ("layer", "kind", "output shape", "params")
    widths = [max(len(r[i]) for r in lines + [header]) for i in range(4)]
    fmt = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    rule = "-" * len(fmt(header))
    body = [fmt(header), rule, *map(fmt, lines), rule]
    body.append(f"{kind}: input {tuple(input_shape)} -> output {out_shape}, total params {total:,}")
    return "\n".join(body)
