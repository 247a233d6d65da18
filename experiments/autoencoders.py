"""The Caffe autoencoder (L2 reconstruction) and the VAE (-ELBO) programs, then samples from the prior.

Trains configs/caffe_autoencoder.yaml and configs/vae.yaml with
`fdl.config.train_from_config`, on the built-in MNIST-1D or, with `--mnist DIR`
(a folder of the four IDX files), on MNIST. Prints the test reconstruction
error of both (mean squared error per value) and the VAE's test -ELBO (nats
per example), and writes `plots/samples.png` into the VAE's run directory: 32 draws
z ~ N(0, I) through the trained decoder — digit images on MNIST, line plots of
the 40-sample signals on MNIST-1D (a (1, 40) image strip would hide the shape).

    python experiments/autoencoders.py
    python experiments/autoencoders.py --mnist ~/data/mnist --only vae
"""
from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import jax
import numpy as np

import fdl
from fdl import records
from fdl.config import build_data, build_model, load_config
from fdl.runs import train_from_config
from fdl.nn.models import vae_decoder
from program import CONFIGS, config_overrides, data_description, parse_args

NUM_SAMPLES = 32
# On MNIST: Caffe's 50-unit code; Bernoulli pixels for the VAE (see the configs).
MNIST_OVERRIDES = {"caffe_autoencoder": ["model.args.bottleneck=50"], "vae": ["objective.args.likelihood=bernoulli"]}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--only", choices=("autoencoder", "vae"), help="train one of the two")


def program_overrides(args: argparse.Namespace, program: str) -> list[str]:
    """The command line's overrides for one of the two configs; --out is the parent of its run directory."""
    out = Path(args.out) / program if args.out else None
    return config_overrides(args, MNIST_OVERRIDES[program], out=out)


def bernoulli(config) -> bool:
    """Whether the VAE's objective has the Bernoulli likelihood (its decoder outputs logits)."""
    return config.objective.args.get("likelihood") == "bernoulli"


def prior_samples(config, state, input_shape, seed: int) -> np.ndarray:
    """(NUM_SAMPLES, *input_shape) decoded means of z ~ N(0, I): sigmoid(logits) when Bernoulli."""
    args = dict(config.model.args)
    decoder = vae_decoder(int(np.prod(input_shape)), tuple(args.get("hidden", (256,))),
                          activation=args.get("activation", "relu"))
    latent = int(args.get("latent", 16))
    z = jax.random.normal(jax.random.key(seed), (NUM_SAMPLES, latent))
    out, _ = fdl.batched(decoder)(state.params["decoder"], state.model_state["decoder"], z)
    out = jax.nn.sigmoid(out) if bernoulli(config) else out
    return np.asarray(out).reshape(NUM_SAMPLES, *input_shape)


def plot_signals(signals: np.ndarray, path: Path, ncols: int = 8) -> Path:
    """A grid of line plots, one 1-D signal per cell, with matplotlib's Figure API (no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = -(-len(signals) // ncols)
    figure = Figure(figsize=(1.6 * ncols, 1.2 * rows), dpi=100)
    FigureCanvasAgg(figure)
    for index, signal in enumerate(signals):
        axes = figure.add_subplot(rows, ncols, index + 1)
        axes.plot(signal, linewidth=1)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle("VAE samples from the prior (MNIST-1D signals)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return records.write_bytes(path, buffer.getvalue())


def reconstruction_mse(config, result, test) -> float:
    """Mean squared error of the VAE's eval-mode reconstruction (z = mean) on `test`."""
    reconstruction = fdl.predict(build_model(config.model), result.state, test.x)[0]
    if bernoulli(config):
        reconstruction = jax.nn.sigmoid(reconstruction)
    return float(np.mean((np.asarray(reconstruction).reshape(test.x.shape) - test.x) ** 2))


def run_autoencoder(args) -> dict:
    config = load_config(CONFIGS / "caffe_autoencoder.yaml", program_overrides(args, "caffe_autoencoder"))
    start = time.perf_counter()
    result = train_from_config(config)
    test = result.summary["test"]
    print(f"caffe_autoencoder [{config.data.name}, code {config.model.args.bottleneck}]: test "
          f"reconstruction {config.objective.args.loss} {test['loss']:.4f}, {time.perf_counter() - start:.1f} s "
          f"({result.run_dir.path})")
    return {"run_dir": result.run_dir.path, f"test_{config.objective.args.loss}": test["loss"]}


def run_vae(args) -> dict:
    config = load_config(CONFIGS / "vae.yaml", program_overrides(args, "vae"))
    start = time.perf_counter()
    result = train_from_config(config)
    dataset = build_data(config.data, config.seed).dataset  # the split the run evaluated
    mse = reconstruction_mse(config, result, dataset.test)
    samples = prior_samples(config, result.state, dataset.feature_shape, config.seed)
    path = result.run_dir.plot("samples")
    if len(dataset.feature_shape) > 1:  # images (28, 28, 1)
        records.plot_images(samples, path, title="VAE samples from the prior")
    else:
        plot_signals(samples, path)
    print(f"vae [{config.data.name}, {config.objective.args.likelihood}]: test -ELBO {result.summary['test']['loss']:.2f} "
          f"nats, test reconstruction mse {mse:.4f}, {time.perf_counter() - start:.1f} s; samples: {path}")
    return {"run_dir": result.run_dir.path, "test_neg_elbo": result.summary["test"]["loss"],
            "test_mse": mse, "samples": path}


def main(argv=None) -> dict:
    args = parse_args(__doc__.splitlines()[0], argv, options=options,
                      out="parent folder of the two run directories (default runs/<name>-<time> each)",
                      set_help="config override for both, repeatable, e.g. --set training.epochs=5")
    print(f"autoencoders: on {data_description(args)}")
    programs = {"autoencoder": run_autoencoder, "vae": run_vae}
    return {name: run(args) for name, run in programs.items() if args.only in (None, name)}


if __name__ == "__main__":
    main()
