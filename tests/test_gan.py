"""experiments/gan.py: its step equals a hand-written two-optimizer step; the script runs in fdl's epoch."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fdl
from tests.test_programs import load_script

gan = load_script("gan")


def test_the_gan_step_equals_a_hand_written_two_optimizer_step():
    nets = gan.models(latent=3, hidden=8, features=5)
    optimizers = {name: optax.adam(1e-2, b1=0.5) for name in nets}
    state = fdl.init_train_state(nets, {"generator": (3,), "discriminator": (5,)}, optimizers, 0)
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    # Both steps compiled, as fit runs a step (op by op they build ~180 programs).
    new_state, logs = jax.jit(gan.make_gan_step(nets["generator"], nets["discriminator"], optimizers, 3))(state, x)

    # By hand: raw optax, no fdl.batched (a vmap of model.apply per example).
    def apply(name, params, inputs):
        model, model_state = nets[name], state.model_state[name]
        return jax.vmap(lambda one: model.apply(params, model_state, one, train=True)[0])(inputs)

    def sigmoid_bce(logits, label):
        return jnp.mean(jnp.maximum(logits, 0) - logits * label + jnp.log1p(jnp.exp(-jnp.abs(logits))))

    @jax.jit
    def by_hand(params, opt_state, rng):
        z = jax.random.normal(jax.random.fold_in(rng, 0), (6, 3))
        g, d = "generator", "discriminator"
        fake = apply(g, params["generator"], z)
        d_loss = lambda p: sigmoid_bce(apply(d, p, x), 1.0) + sigmoid_bce(apply(d, p, fake), 0.0)  # noqa: E731
        d_grads = jax.grad(d_loss)(params["discriminator"])
        d_updates, _ = optimizers["discriminator"].update(d_grads, opt_state["discriminator"])
        d_params = optax.apply_updates(params["discriminator"], d_updates)
        g_loss = lambda p: sigmoid_bce(apply(d, d_params, apply(g, p, z)), 1.0)  # noqa: E731
        g_grads = jax.grad(g_loss)(params["generator"])
        g_updates, _ = optimizers["generator"].update(g_grads, opt_state["generator"])
        g_params = optax.apply_updates(params["generator"], g_updates)
        return d_params, g_params, d_loss(params["discriminator"]), g_loss(params["generator"])

    d_params, g_params, d_value, g_value = by_hand(state.params, state.opt_state, state.rng)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    jax.tree.map(close, new_state.params["discriminator"], d_params)
    jax.tree.map(close, new_state.params["generator"], g_params)
    close(logs["d_loss"], d_value)
    close(logs["g_loss"], g_value)


def test_the_gan_script_trains_in_fdls_epoch_and_counts_its_steps(tmp_path):
    outcome = gan.main(["--set", "training.epochs=2", "--set", "data.limit_train=256",
                        "--set", "training.verbose=0", "--out", str(tmp_path)])
    history = outcome["history"]
    assert [row["epoch"] for row in history] == [1, 2] and history[-1]["step"] == 8  # 256 / 64 per epoch
    assert all(math.isfinite(row[key]) for row in history for key in ("d_loss", "g_loss", "loss"))
    assert outcome["samples"].shape == (16, 40) and np.all(np.isfinite(outcome["samples"]))
