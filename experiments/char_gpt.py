"""A character-level GPT on real English text that ships with every Debian system.

The recipe is configs/char_gpt.yaml (its top comment describes the corpus, Debian's
`base-files` licence texts in /usr/share/common-licenses, and their licences): the
library's text loader (`fdl.data.load_text`) cuts the bytes by position into train, val
and test windows of `context + 1` bytes, `fdl train` fits `fdl.nn.models.gpt` with
`fdl.objectives.masked_sequence_cross_entropy` and writes samples.txt through
`fdl.nn.models.generate`. This script runs exactly that and adds the baseline: the
unigram model fitted on the training text (what a model that ignores context reaches).

    python experiments/char_gpt.py                  # = fdl train configs/char_gpt.yaml, plus the baseline
    python experiments/char_gpt.py --set training.epochs=1 --out runs/char_gpt-quick
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import fdl.config
import fdl.runs

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "char_gpt.yaml"


def unigram_bits(train: np.ndarray, val: np.ndarray) -> float:
    """Bits per character of `val` under byte frequencies of `train` (add-one smoothed).

    Args:
      train, val: int arrays of byte values in [0, 256), any shape.
    """
    counts = np.bincount(np.ravel(train), minlength=256) + 1.0
    return float(-np.mean(np.log2(counts / counts.sum())[np.ravel(val)]))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of configs/char_gpt.yaml, e.g. training.epochs=1")
    parser.add_argument("--out", help="the run directory (default runs/char_gpt-<timestamp>)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    overrides = args.overrides + ([f"output.dir={args.out}"] if args.out else [])
    config = fdl.config.load_config(CONFIG, overrides)
    result = fdl.runs.train_from_config(config)
    # The targets the objective scores: every token of a window but the first.
    dataset = fdl.config.build_data(config.data, config.seed).dataset
    baseline = unigram_bits(dataset.train.x["tokens"][:, 1:], dataset.val.x["tokens"][:, 1:])
    val_bits = result.summary["val"]["bits_per_token"]
    sample = result.run_dir.samples_path.read_text(encoding="utf-8").rstrip("\n")
    print(f"char_gpt: {dataset.train.num_examples} training windows of {dataset.feature_shape[0]}, "
          f"{len(result.history)} epochs: validation {val_bits:.3f} bits/char (unigram {baseline:.3f}, "
          f"{math.log2(256):.0f} uniform); run directory {result.run_dir.path}")
    print(f"sample: {sample!r}")
    return {"run_dir": result.run_dir, "history": result.history, "val_bits_per_char": val_bits,
            "test_bits_per_char": result.summary["test"]["bits_per_token"], "unigram_bits_per_char": baseline,
            "sample": sample}


if __name__ == "__main__":
    main(sys.argv[1:])
