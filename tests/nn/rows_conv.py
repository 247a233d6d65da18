"""Catalogue rows for convolutions and pooling (fdl.nn.conv, fdl.nn.pooling)."""
# Imported from the modules, not `fdl.nn`, so the rows run whatever `fdl.nn` exports.
from fdl.nn.conv import Conv, Conv1D, Conv2D, Conv3D, ConvTranspose, ConvTranspose1D, ConvTranspose2D
from fdl.nn.pooling import AvgPool, AvgPool2D, GlobalAvgPool, GlobalMaxPool, MaxPool1D, MaxPool2D

ROWS = [
    ("conv1d", lambda: Conv1D(4, 3), (8, 3)),
    ("conv1d_lax", lambda: Conv1D(4, 3, implementation="lax"), (8, 3)),
    ("conv1d_strided_dilated_explicit_padding",
     lambda: Conv1D(3, 3, strides=2, dilation=2, padding=((2, 1),)), (9, 2)),
    ("conv1d_groups_valid", lambda: Conv1D(4, 3, groups=2, padding="VALID"), (7, 4)),
    ("conv2d_strided", lambda: Conv2D(3, (3, 2), strides=2), (5, 6, 2)),
    ("conv2d_groups_dilated_lax", lambda: Conv2D(4, 3, groups=2, dilation=(1, 2), implementation="lax"),
     (5, 6, 4)),
    ("conv3d", lambda: Conv3D(2, 2, strides=(1, 2, 1)), (3, 4, 3, 2)),
    ("conv_rank_from_input", lambda: Conv(3, 3, use_bias=False), (6, 2)),
    ("conv_transpose1d", lambda: ConvTranspose1D(3, 3, strides=2), (5, 2)),
    ("conv_transpose2d_explicit_padding_dilated",
     lambda: ConvTranspose2D(2, 3, strides=2, padding=1, dilation=(1, 2)), (3, 3, 2)),
    ("conv_transpose3d_valid", lambda: ConvTranspose(2, (2, 2, 2), strides=2, padding="VALID"), (2, 2, 2, 1)),
    ("max_pool1d", lambda: MaxPool1D(2), (7, 3)),
    ("max_pool2d_same", lambda: MaxPool2D(3, strides=2, padding="SAME"), (5, 5, 2)),
    ("avg_pool1d_padded", lambda: AvgPool(3, strides=1, padding=1), (6, 2)),
    ("avg_pool2d_count_include_pad", lambda: AvgPool2D(2, padding=((1, 0), (0, 1)), count_include_pad=True),
     (5, 4, 2)),
    ("avg_pool3d", lambda: AvgPool((2, 2, 2)), (4, 4, 2, 1)),
    ("global_avg_pool", GlobalAvgPool, (4, 3, 2)),
    ("global_max_pool", GlobalMaxPool, (6, 3)),
]
