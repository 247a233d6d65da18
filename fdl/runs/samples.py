"""Text a trained byte-level language model writes: a run's samples.txt (the `sample:` section).

    text = sample_text(arguments, state)          # the prompt and `sample.length` drawn bytes
    write_samples(run_dir, arguments, state)      # samples.txt when the config asks for it

The tokens are bytes (`fdl.data.load_text`): the prompt is encoded as UTF-8, the
model reads windows of `data`'s context (the dataset's `feature_shape`), and the
drawn bytes are decoded with invalid sequences replaced (U+FFFD), so a sample
that cuts a multi-byte character still reads.
"""
from __future__ import annotations

from pathlib import Path

import jax

from fdl.config import RunArguments
from fdl.nn.models import generate
from fdl.records import RunDir
from fdl.train import TrainState

__all__ = ["sample_text", "write_samples"]


def sample_text(arguments: RunArguments, state: TrainState) -> str:
    """The `sample:` section's prompt continued by `sample.length` bytes of `state`'s model.

    Drawn by `fdl.nn.models.generate` at `sample.temperature` with the key
    `jax.random.key(config.seed)`, so a run's samples are reproducible.
    """
    section = arguments.config.sample
    context = arguments.data.dataset.feature_shape[0]
    tokens = generate(arguments.model, state.params, state.model_state, list(section.prompt.encode("utf-8")),
                      section.length, jax.random.key(arguments.config.seed), section.temperature,
                      context=context)
    return bytes(jax.device_get(tokens).astype("uint8").tolist()).decode("utf-8", errors="replace")


def write_samples(run_dir: RunDir, arguments: RunArguments, state: TrainState) -> Path | None:
    """Writes samples.txt (`sample_text` and a newline) when the config has a `sample:` section.

    Returns:
      The file written, or None without a `sample:` section.
    """
    if arguments.config.get("sample") is None:
        return None
    return run_dir.write_samples(sample_text(arguments, state) + "\n")
