"""Catalogue rows for dense, reshape, activations, combinators and transforms."""
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
    # Transforms (fdl/nn/transforms.py) and the decoder block, which is built from these combinators.
    ("repeat", lambda: nn.repeat(nn.residual(nn.Dense(3), nn.Tanh()), 3), (3,)),
    ("remat", lambda: nn.remat(nn.serial(nn.Dense(4), nn.Gelu()), "dots_saveable"), (3,)),
    ("repeat_remat_dropout", lambda: nn.repeat(nn.remat(nn.residual(nn.Dense(3), nn.Dropout(0.5))), 2),
     (2, 3)),
    ("transformer_decoder_block_rms_rotary",
     lambda: nn.TransformerDecoderBlock(2, 6, norm="rms", rotary=True), (4, 4)),
]
