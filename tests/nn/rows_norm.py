"""Catalogue rows for normalization, dropout and embedding layers.

The catalogue applies with train=False, so these rows cover evaluation mode;
train mode is tested in test_normalization.py and test_dropout.py.
"""
from fdl.nn.dropout import Dropout
from fdl.nn.embedding import Embedding, PositionalEmbedding, RotaryEmbedding
from fdl.nn.normalization import BatchNorm, GroupNorm, LayerNorm, RMSNorm

ROWS = [
    ("batch_norm", BatchNorm, (4,)),
    ("batch_norm_image", lambda: BatchNorm(momentum=0.9), (3, 3, 2)),
    ("batch_norm_channels_first", lambda: BatchNorm(axis=0), (2, 5)),
    ("layer_norm", LayerNorm, (5,)),
    ("layer_norm_two_axes", lambda: LayerNorm(axis=(-2, -1), use_bias=False), (3, 4)),
    ("group_norm_image", lambda: GroupNorm(2), (3, 3, 4)),
    ("dropout", lambda: Dropout(0.5), (5,)),
    ("spatial_dropout", lambda: Dropout(0.3, broadcast_axes=(0, 1)), (3, 3, 2)),
    ("embedding", lambda: Embedding(7, 3), ("tokens", 5, 7)),
    ("positional_embedding", lambda: PositionalEmbedding(6, 3), (4, 3)),
    ("rms_norm", RMSNorm, (5,)),
    ("rms_norm_two_axes_no_scale", lambda: RMSNorm(axis=(-2, -1), use_scale=False), (3, 4)),
    ("rotary_embedding_heads", RotaryEmbedding, (4, 2, 6)),
]
