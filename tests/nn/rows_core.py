"""Catalogue rows for dense, reshape, activations and combinators."""
from fdl import nn

ROWS = [
    ("dense", lambda: nn.Dense(4), (5,)),
    ("dense_on_sequence", lambda: nn.Dense(4, w_init="he_normal"), (3, 5)),
    ("flatten", nn.Flatten, (2, 3, 2)),
    ("reshape", lambda: nn.Reshape((3, -1)), (6,)),
    *[(kind.__name__.lower(), kind, (5,)) for kind in (
        nn.Identity, nn.Relu, nn.LeakyRelu, nn.Elu, nn.Gelu, nn.Silu, nn.Tanh, nn.Sigmoid,
        nn.Softmax, nn.LogSoftmax)],
    ("activation_by_name", lambda: nn.Activation("gelu"), (5,)),
    ("serial", lambda: nn.serial(nn.Dense(6), nn.Tanh(), nn.Dense(2)), (4,)),
    ("residual", lambda: nn.residual(nn.Dense(4), nn.Tanh()), (4,)),
    ("parallel_concat", lambda: nn.serial(nn.parallel(nn.Dense(2), nn.Dense(3)), nn.FanInConcat()), (4,)),
    ("parallel_sum", lambda: nn.serial(nn.parallel(nn.Dense(3), nn.Identity()), nn.FanInSum()), (3,)),
]
