"""A character-level GPT on real English text that ships with every Debian system.

Corpus: the licence texts of /usr/share/common-licenses (Debian's `base-files` package:
GPL, LGPL, GFDL, Apache, MPL, Artistic, BSD, CC0 — about 260 KB of English prose; each
licence permits verbatim copying, and nothing is copied into this repository). The
texts are joined in file-name order and split 90/10 into train and validation by
position. Windows of `context + 1` bytes become the dict batch {"tokens", "mask"}; the
model is `fdl.nn.models.gpt` trained by `fdl.fit` with
`fdl.objectives.masked_sequence_cross_entropy` (next-byte prediction).

    python experiments/char_gpt.py                  # the recipe in experiments/char_gpt.yaml
    python experiments/char_gpt.py --set training.epochs=1

Reports validation loss in bits per character against the unigram model fitted on the
training text (what a model that ignores context reaches), and writes samples to
<out>/samples.txt.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from omegaconf import OmegaConf

import fdl
from fdl import nn, objectives

CONFIG = Path(__file__).with_name("char_gpt.yaml")
CORPUS = Path("/usr/share/common-licenses")


def load_corpus(folder: Path = CORPUS) -> np.ndarray:
    """The corpus as (characters,) uint8 bytes, licences joined in file-name order."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.is_symlink())
    if not files:
        raise FileNotFoundError(f"{folder}: no licence texts — the char GPT reads Debian's base-files corpus")
    return np.frombuffer(b"\n".join(p.read_bytes() for p in files), np.uint8)


def windows(text: np.ndarray, context: int, stride: int) -> dict:
    """{"tokens": (n, context + 1) int32, "mask": (n, context + 1) bool} windows of `text`."""
    starts = np.arange(0, len(text) - context - 1, stride)
    tokens = np.stack([text[s:s + context + 1] for s in starts]).astype(np.int32)
    return {"tokens": tokens, "mask": np.ones_like(tokens, bool)}


def unigram_bits(train: np.ndarray, val: np.ndarray) -> float:
    """Bits per character of `val` under byte frequencies of `train` (add-one smoothed)."""
    counts = np.bincount(train, minlength=256) + 1.0
    return float(-np.mean(np.log2(counts / counts.sum())[val]))


def sample(model, state, prompt: bytes, length: int, context: int, seed: int, temperature: float) -> str:
    """`length` bytes drawn one at a time after `prompt` (eval mode, the last `context` bytes)."""
    apply = jax.jit(lambda params, tokens: fdl.batched(model)(params, state.model_state, tokens)[0])
    tokens = list(prompt)
    key = jax.random.key(seed)
    for _ in range(length):
        window = np.zeros((1, context), np.int32)
        recent = tokens[-context:]
        window[0, :len(recent)] = recent
        logits = apply(state.params, jnp.asarray(window))[0, len(recent) - 1]
        key, draw = jax.random.split(key)
        tokens.append(int(jax.random.categorical(draw, logits / temperature)))
    return bytes(tokens).decode("utf-8", errors="replace")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of experiments/char_gpt.yaml, e.g. training.epochs=1")
    parser.add_argument("--out", default="runs/char_gpt", help="folder for samples.txt")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(args.overrides))
    text = load_corpus()
    if config.data.limit_chars:
        text = text[:config.data.limit_chars]
    cut = int(0.9 * len(text))
    train_text, val_text = text[:cut], text[cut:]
    context = config.model.context
    train = windows(train_text, context, config.data.stride)
    val = windows(val_text, context, context)
    model = nn.models.gpt(vocab_size=256, context=context, width=config.model.width, depth=config.model.depth,
                          heads=config.model.heads, dropout_rate=config.model.dropout)
    objective = objectives.masked_sequence_cross_entropy()
    state, history = fdl.fit(model, train, val=val, objective=objective, input_shape=(context,),
                             optimizer=dict(config.optimizer), epochs=config.training.epochs,
                             batch_size=config.training.batch_size, seed=config.seed,
                             verbose=config.training.verbose)
    baseline = unigram_bits(train_text, val_text)
    val_bits = history[-1]["val_bits_per_token"]
    text_out = sample(model, state, b"The ", config.sample.length, context, config.seed,
                      config.sample.temperature)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fdl.records.write_text(out / "samples.txt", text_out + "\n")
    print(f"char_gpt: {len(train['tokens'])} training windows of {context}, {len(history)} epochs: "
          f"validation {val_bits:.3f} bits/char (unigram {baseline:.3f}, {math.log2(256):.0f} uniform)")
    print(f"sample: {text_out!r}")
    return {"history": history, "val_bits_per_char": val_bits, "unigram_bits_per_char": baseline,
            "sample": text_out}


if __name__ == "__main__":
    main(sys.argv[1:])
