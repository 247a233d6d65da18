"""A GAN on MNIST-1D: two models, two optimizers, one custom step inside fdl's fused epoch.

The generator maps z ~ N(0, I) (latent,) to a standardized 40-sample signal; the
discriminator maps a signal to one logit. Each step updates the discriminator on
real and generated signals, then the generator through the updated
discriminator (the non-saturating loss of Goodfellow et al., 2014). fdl runs the
step in its fused epoch, with its data order, keys (`fdl.train.state.step_key`),
NaN detection and history; the state holds both models
(`fdl.init_train_state` with dicts).

    python experiments/gan.py                    # the recipe in experiments/gan.yaml
    python experiments/gan.py --set training.epochs=2
    python experiments/gan.py --smoke            # seconds: SMOKE_OVERRIDES

Prints the discriminator's and generator's losses and writes samples (plots/gan_samples.png
under --out, default runs/gan).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from omegaconf import OmegaConf

import fdl
from fdl import nn
from fdl.train.state import step_key

CONFIG = Path(__file__).with_name("gan.yaml")
SMOKE_OVERRIDES = ["training.epochs=1", "data.limit_train=256", "training.verbose=0"]


def models(latent: int, hidden: int, features: int) -> dict:
    """{"generator": z (latent,) -> signal (features,), "discriminator": signal -> (1,) logit}."""
    generator = nn.serial(nn.Dense(hidden), nn.LeakyRelu(0.2), nn.Dense(hidden), nn.LeakyRelu(0.2),
                          nn.Dense(features))
    discriminator = nn.serial(nn.Dense(hidden), nn.LeakyRelu(0.2), nn.Dense(hidden), nn.LeakyRelu(0.2),
                              nn.Dense(1))
    return {"generator": generator, "discriminator": discriminator}


def bce(logits, target: float):
    """Mean binary cross-entropy of (batch, 1) logits against a constant label."""
    return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, jnp.full_like(logits, target)))


def make_gan_step(generator: nn.Layer, discriminator: nn.Layer, optimizers: dict, latent: int):
    """`step(state, x) -> (state, logs)`: one discriminator update, then one generator update.

    x: (batch, features) real signals. state.params / opt_state are dicts with
    "generator" and "discriminator"; z is drawn from the step's key.
    """
    g_apply, d_apply = fdl.batched(generator), fdl.batched(discriminator)

    def d_loss(d_params, d_state, real, fake):
        real_logits, _ = d_apply(d_params, d_state, real, train=True)
        fake_logits, _ = d_apply(d_params, d_state, fake, train=True)
        return bce(real_logits, 1.0) + bce(fake_logits, 0.0), jnp.mean(real_logits > 0)

    def g_loss(g_params, g_state, d_params, d_state, z):
        fake, _ = g_apply(g_params, g_state, z, train=True)
        fake_logits, _ = d_apply(d_params, d_state, fake, train=True)
        return bce(fake_logits, 1.0)

    def step(state, x):
        params, model_state, opt_state = state.params, state.model_state, state.opt_state
        z = jax.random.normal(step_key(state), (x.shape[0], latent))
        fake, _ = g_apply(params["generator"], model_state["generator"], z, train=True)
        (d_value, real_accuracy), d_grads = jax.value_and_grad(d_loss, has_aux=True)(
            params["discriminator"], model_state["discriminator"], x, jax.lax.stop_gradient(fake))
        d_updates, d_opt = optimizers["discriminator"].update(d_grads, opt_state["discriminator"],
                                                              params["discriminator"])
        d_params = optax.apply_updates(params["discriminator"], d_updates)
        g_value, g_grads = jax.value_and_grad(g_loss)(params["generator"], model_state["generator"],
                                                      d_params, model_state["discriminator"], z)
        g_updates, g_opt = optimizers["generator"].update(g_grads, opt_state["generator"], params["generator"])
        new_params = {"generator": optax.apply_updates(params["generator"], g_updates),
                      "discriminator": d_params}
        logs = {"loss": d_value + g_value, "d_loss": d_value, "g_loss": g_value,
                "d_real_accuracy": real_accuracy}
        return state.replace(params=new_params, opt_state={"generator": g_opt, "discriminator": d_opt}), logs

    return step


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of experiments/gan.yaml, e.g. training.epochs=2")
    parser.add_argument("--out", default="runs/gan", help="folder for the samples plot")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds, not minutes: " + " ".join(SMOKE_OVERRIDES) + " (before the --set ones)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.overrides = SMOKE_OVERRIDES + args.overrides
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    config = OmegaConf.merge(OmegaConf.load(CONFIG), OmegaConf.from_dotlist(args.overrides))
    dataset, _ = fdl.data.preprocess(fdl.data.load("mnist1d"), "standardize")
    x = dataset.train.x[:config.data.limit_train] if config.data.limit_train else dataset.train.x
    nets = models(config.model.latent, config.model.hidden, x.shape[1])
    optimizers = {name: fdl.optim.make_optimizer(**config.optimizer) for name in nets}
    shapes = {"generator": (config.model.latent,), "discriminator": (x.shape[1],)}
    state = fdl.init_train_state(nets, shapes, optimizers, config.seed)
    step = make_gan_step(nets["generator"], nets["discriminator"], optimizers, config.model.latent)
    state, history = fdl.fit(None, x, step=step, state=state, epochs=config.training.epochs,
                             batch_size=config.training.batch_size, verbose=config.training.verbose)
    z = jax.random.normal(jax.random.key(config.seed), (16, config.model.latent))
    samples, _ = fdl.batched(nets["generator"])(state.params["generator"], state.model_state["generator"], z)
    last = history[-1]
    print(f"gan: {len(history)} epochs, d_loss {last['d_loss']:.3f}, g_loss {last['g_loss']:.3f}, "
          f"discriminator accuracy on real {last['d_real_accuracy']:.3f}")
    samples = np.asarray(samples)
    path = Path(args.out) / "plots" / "gan_samples.png"
    try:
        fdl.records.plot_images(samples[:, None, :].repeat(8, axis=1), path, title="GAN samples")
    except ImportError:  # matplotlib is the records extra
        path = None
    return {"history": history, "samples": samples, "plot": path}


if __name__ == "__main__":
    main(sys.argv[1:])
