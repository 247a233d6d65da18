"""The windowed families' constructors (one definition each) and the nn modules' public surface."""
import importlib
import inspect

import jax
import numpy as np
import pytest

from fdl.nn import conv, pooling
from fdl.nn.core import Layer
from fdl.nn.window import LAYOUTS, layer_constructor, ranked_constructors

FAMILIES = [  # (module, family, the private definition its constructors come from)
    (conv, "Conv", conv._conv),
    (conv, "ConvTranspose", conv._conv_transpose),
    (pooling, "MaxPool", pooling._max_pool_layer),
    (pooling, "AvgPool", pooling._avg_pool_layer),
]


@pytest.mark.parametrize("module, family, build", FAMILIES, ids=[f[1] for f in FAMILIES])
def test_every_rank_has_the_definitions_signature_and_its_own_name(module, family, build):
    expected = list(inspect.signature(build).parameters.values())[2:]  # less (kind, ndim)
    for suffix, ndim in [("", None), ("1D", 1), ("2D", 2), ("3D", 3)]:
        constructor = getattr(module, family + suffix)
        assert constructor.__name__ == constructor.__qualname__ == family + suffix
        assert constructor.__module__ == module.__name__
        assert list(inspect.signature(constructor).parameters.values()) == expected
        if ndim is None:
            assert constructor.__doc__ == build.__doc__
        else:
            assert LAYOUTS[ndim] in constructor.__doc__ and f"`{family}`" in constructor.__doc__


@pytest.mark.parametrize("make, kind", [
    (lambda: conv.Conv1D(4, 3, stride=2), "Conv1D"),
    (lambda: conv.ConvTranspose2D(4), "ConvTranspose2D"),
    (lambda: pooling.MaxPool3D(2, 2), "MaxPool3D"),
    (lambda: pooling.AvgPool(2, count_include_padding=True), "AvgPool"),
])
def test_a_bad_call_names_the_layer_kind(make, kind):
    with pytest.raises(TypeError, match=rf"^{kind}: "):
        make()


def test_fixed_rank_equals_the_general_constructor_with_a_tuple_window():
    key, x = jax.random.key(0), np.arange(2 * 7 * 3, dtype=np.float32).reshape(7, 2, 3) / 10
    pairs = [(conv.Conv2D(5, 3, strides=2), conv.Conv(5, (3, 3), strides=2)),
             (pooling.AvgPool2D(2, padding=1), pooling.AvgPool((2, 2), padding=1))]
    for fixed, general in pairs:
        shape, params, state = fixed.init(key, x.shape)
        assert general.init(key, x.shape)[0] == shape
        np.testing.assert_array_equal(fixed.apply(params, state, x)[0],
                                      general.apply(params, state, x)[0])


def test_layer_constructor_binds_kind_and_ndim():
    def build(kind, ndim, size, *, scale=1.0):
        """Doc of the family."""
        return Layer(lambda key, shape: (shape, {}, {}), lambda p, s, x, **_: (x, s),
                     f"{kind}/{ndim}/{size}/{scale}")

    made = layer_constructor(build, "Thing2D", 2)
    assert str(inspect.signature(made)) == "(size, *, scale=1.0)"
    assert made(3, scale=2.0).kind == "Thing2D/2/3/2.0" and made.__doc__ == "Doc of the family."
    general, one, two, three = ranked_constructors(build, "Thing", "Thing over {layout}.")
    assert [c(1).kind for c in (general, one, two, three)] == [
        "Thing/None/1/1.0", "Thing1D/1/1/1.0", "Thing2D/2/1/1.0", "Thing3D/3/1/1.0"]
    assert three.__doc__ == "Thing over (depth, height, width, channels)."


NN_MODULES = ["activations", "attention", "combinators", "conv", "core", "dense", "dropout",
              "embedding", "initializers", "models", "normalization", "pooling", "recurrent",
              "reshape", "window"]


@pytest.mark.parametrize("name", NN_MODULES)
def test_every_nn_module_lists_existing_public_names(name):
    module = importlib.import_module(f"fdl.nn.{name}")
    names = module.__all__
    assert names and len(set(names)) == len(names)
    assert [n for n in names if n.startswith("_") or not hasattr(module, n)] == []
