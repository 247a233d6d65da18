"""One shared check over the whole layer catalogue.

For every row: the shape `init` claims is the shape `apply` returns; `vmap`
over a batch equals a stack of single-example calls; `jit` gives the same
numbers; and gradients wrt params and input match finite differences (float64).
A new layer is one new row in a `tests/nn/rows_*.py` file (a list `ROWS` of
`(name, make_layer, input_shape)`), collected here. A layer taking or giving a
tuple (e.g. a recurrent layer's `(sequence, state)`) has a tuple of shapes, as
`parallel`'s output shape; the checks run on every array of the tuple.
"""
import glob
import importlib.util
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import fdl


def _load_rows():
    rows = []
    for path in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "rows_*.py"))):
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        rows.extend(module.ROWS)
    return rows


ROWS = _load_rows()
BATCH = 3


def _is_shape(shape):
    return isinstance(shape, tuple) and all(isinstance(d, int) for d in shape)


def _map_shapes(function, shapes, *trees):
    """`function(shape, *leaves)` over a shape or a (nested) tuple of shapes."""
    return jax.tree.map(function, shapes, *trees, is_leaf=_is_shape)


def _example(xs, i):
    return jax.tree.map(lambda a: a[i], xs)


def _example_batch(input_shape, seed):
    """A batch for `input_shape`; int32 tokens when the shape is ("tokens", length, vocab)."""
    rng = np.random.default_rng(seed)
    if input_shape and input_shape[0] == "tokens":
        _, length, vocab = input_shape
        return (length,), jnp.asarray(rng.integers(0, vocab, (BATCH, length)), jnp.int32)
    return input_shape, _map_shapes(
        lambda shape: jnp.asarray(rng.normal(size=(BATCH, *shape)), jnp.float32), input_shape)


@pytest.mark.parametrize("name,make_layer,input_shape", ROWS, ids=[r[0] for r in ROWS])
def test_layer_contract(name, make_layer, input_shape):
    layer = make_layer()
    shape, xs = _example_batch(input_shape, seed=0)
    out_shape, params, state = layer.init(jax.random.key(1), shape)
    key = jax.random.key(2)

    ys, new_state = fdl.batched(layer)(params, state, xs, key=key)
    _map_shapes(lambda shape, y: chex.assert_shape(y, (BATCH, *shape)), out_shape, ys)
    chex.assert_trees_all_equal_shapes(new_state, state)

    keys = jax.random.split(key, BATCH)
    singles = [layer.apply(params, state, _example(xs, i), key=keys[i])[0] for i in range(BATCH)]
    chex.assert_trees_all_close(ys, jax.tree.map(lambda *y: jnp.stack(y), *singles),
                                rtol=1e-5, atol=1e-5)

    jitted = jax.jit(lambda p, s, x: fdl.batched(layer)(p, s, x, key=key))
    chex.assert_trees_all_close(jitted(params, state, xs)[0], ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,make_layer,input_shape", ROWS, ids=[r[0] for r in ROWS])
def test_layer_gradients(name, make_layer, input_shape):
    layer = make_layer()
    shape, xs = _example_batch(input_shape, seed=3)
    _, params, state = layer.init(jax.random.key(4), shape)
    with jax.enable_x64(True):
        to64 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, t)
        params, state, x = to64(params), to64(state), to64(_example(xs, 0))

        def scalar(params, x):
            y, _ = layer.apply(params, state, x, key=jax.random.key(5))
            return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(y))

        if all(jnp.issubdtype(leaf.dtype, jnp.floating) for leaf in jax.tree_util.tree_leaves(x)):
            check_grads(scalar, (params, x), order=1, modes=["rev"], atol=1e-4, rtol=1e-4)
        else:
            check_grads(lambda p: scalar(p, x), (params,), order=1, modes=["rev"], atol=1e-4, rtol=1e-4)
