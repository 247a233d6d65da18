"""Weight initializers by name, all from `jax.nn.initializers`.

Defaults across fdl: weights `lecun_normal` (Flax's and stax's default; it
keeps the activation variance for linear/tanh layers), biases `zeros`. For ReLU
networks pass `w_init="he_normal"`. Keras' default is "glorot_uniform";
PyTorch's is closest to "lecun_uniform" (kaiming_uniform with a=sqrt(5)).
"""
from __future__ import annotations

from typing import Callable

from jax.nn import initializers as jinit

from fdl.errors import unknown_name_message

__all__ = ["get_initializer", "INITIALIZERS", "Initializer"]

Initializer = Callable  # (key, shape, dtype) -> array

INITIALIZERS: dict[str, Callable[[], Initializer]] = {
    "zeros": lambda: jinit.zeros,
    "ones": lambda: jinit.ones,
    "normal": lambda: jinit.normal(stddev=1e-2),
    "uniform": lambda: jinit.uniform(scale=1e-2),
    "truncated_normal": lambda: jinit.truncated_normal(stddev=1e-2),
    "orthogonal": jinit.orthogonal,
    "lecun_normal": jinit.lecun_normal,
    "lecun_uniform": jinit.lecun_uniform,
    "glorot_normal": jinit.glorot_normal,
    "glorot_uniform": jinit.glorot_uniform,
    "xavier_normal": jinit.glorot_normal,
    "xavier_uniform": jinit.glorot_uniform,
    "he_normal": jinit.he_normal,
    "he_uniform": jinit.he_uniform,
    "kaiming_normal": jinit.he_normal,
    "kaiming_uniform": jinit.he_uniform,
}


def get_initializer(spec: str | Initializer, *, owner: str = "layer") -> Initializer:
    """An initializer from its name (see INITIALIZERS) or a callable passed through.

    Args:
      spec: a name such as "he_normal", or `init(key, shape, dtype) -> array`.
      owner: what asks, e.g. "Dense w_init", for the error message.

    Raises:
      ValueError: an unknown name, with the closest valid one.
    """
    if callable(spec):
        return spec
    if spec not in INITIALIZERS:
        raise ValueError(f"{owner}: {unknown_name_message('initializer', spec, INITIALIZERS)}")
    return INITIALIZERS[spec]()
