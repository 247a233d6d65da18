"""fdl.nn: layers as pairs of pure functions.

The contract (see `fdl.nn.core`): a `Layer` is `(init, apply)` with
`init(key, input_shape) -> (output_shape, params, state)` and
`apply(params, state, x, *, key=None, train=False) -> (y, state)`; shapes and
`x` are per example. Layouts are channels-last: sequences `(length, channels)`,
images `(height, width, channels)`, volumes `(depth, height, width, channels)`.
`fdl.batched(model)` lifts a model over a batch with `jax.vmap(axis_name="batch")`.
"""
from fdl.nn.activations import (
    Activation, Elu, Gelu, Identity, LeakyRelu, LogSoftmax, Relu, Sigmoid, Silu, Softmax, Tanh,
    elu, gelu, get_activation, identity, leaky_relu, log_softmax, relu, sigmoid, silu, softmax, tanh,
)
from fdl.nn.attention import (
    MultiHeadSelfAttention, TransformerDecoderBlock, TransformerEncoderBlock, attention_weights,
    fused_attention,
)
from fdl.nn.combinators import FanInConcat, FanInSum, parallel, residual, serial
from fdl.nn.conv import (
    Conv, Conv1D, Conv2D, Conv3D, ConvTranspose, ConvTranspose1D, ConvTranspose2D, ConvTranspose3D,
)
from fdl.nn.core import Layer, ShapeError, batched, init_child, named
from fdl.nn.dense import Dense
from fdl.nn.dropout import Dropout
from fdl.nn.embedding import Embedding, PositionalEmbedding, RotaryEmbedding, rotary_embedding
from fdl.nn.initializers import get_initializer
from fdl.nn.normalization import BatchNorm, GroupNorm, LayerNorm, RMSNorm
from fdl.nn.pooling import (
    AvgPool, AvgPool1D, AvgPool2D, AvgPool3D, GlobalAvgPool, GlobalMaxPool, MaxPool, MaxPool1D,
    MaxPool2D, MaxPool3D,
)
from fdl.nn.recurrent import GRU, LSTM, SimpleRNN
from fdl.nn.reshape import Flatten, Reshape
from fdl.nn.summary import output_shape, summary
from fdl.nn.transforms import remat, repeat
from fdl.nn import models  # noqa: E402 — after the layers it builds from

__all__ = [
    "models", "Layer", "ShapeError", "batched", "init_child", "named", "summary", "output_shape", "get_initializer",
    "serial", "parallel", "residual", "FanInSum", "FanInConcat", "remat", "repeat",
    "Dense", "Dropout", "Flatten", "Reshape", "BatchNorm", "LayerNorm", "GroupNorm", "RMSNorm",
    "Embedding", "PositionalEmbedding", "RotaryEmbedding", "rotary_embedding", "SimpleRNN", "LSTM",
    "GRU", "MultiHeadSelfAttention", "TransformerEncoderBlock", "TransformerDecoderBlock",
    "attention_weights", "fused_attention",
    "Conv", "Conv1D", "Conv2D", "Conv3D", "ConvTranspose", "ConvTranspose1D", "ConvTranspose2D",
    "ConvTranspose3D", "MaxPool", "MaxPool1D", "MaxPool2D", "MaxPool3D", "AvgPool", "AvgPool1D",
    "AvgPool2D", "AvgPool3D", "GlobalAvgPool", "GlobalMaxPool",
    "Activation", "Identity", "Relu", "LeakyRelu", "Elu", "Gelu", "Silu", "Tanh", "Sigmoid",
    "Softmax", "LogSoftmax", "get_activation",
    "relu", "leaky_relu", "elu", "gelu", "silu", "tanh", "sigmoid", "softmax", "log_softmax",
    "identity",
]
