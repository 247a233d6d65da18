"""An objective that depends on the optimizer step (a KL warm-up) is scored on val at the state's step."""
import numpy as np
import pytest

import fdl
from fdl import nn


def test_a_kl_warm_up_scores_val_at_the_step_training_reached():
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    model, objective = nn.models.vae(latent=2, hidden=[16]), fdl.objectives.vae_elbo(warmup_steps=10)
    state, history = fdl.fit(model, x, val=x[:20], objective=objective, epochs=3, batch_size=16, verbose=0,
                             input_shape=(8,))
    # 4 steps an epoch: val after steps 4, 8, 12 weighs the KL term by min(step / 10, 1)
    np.testing.assert_allclose(history["val_kl_weight"], [0.4, 0.8, 1.0], rtol=1e-6)
    for row in history:
        np.testing.assert_allclose(row["val_loss"], row["val_reconstruction"] + row["val_kl_weight"] * row["val_kl"],
                                   rtol=1e-5)
    evaluator = fdl.train.Evaluator(model, objective=objective)
    scores = evaluator.evaluate(state.params, state.model_state, x[:20], step=state.step)
    np.testing.assert_allclose(scores["loss"], history[-1]["val_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match=r"step: this objective depends on the optimizer step .* step=state.step"):
        evaluator.evaluate(state.params, state.model_state, x[:20])


def test_a_population_scores_a_kl_warm_up_on_val_at_each_members_step():
    from fdl.population import MemberSpec, train_population

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    result = train_population(nn.models.vae(latent=2, hidden=[16]), x, x[:20], members=[MemberSpec(0)],
                              objective=fdl.objectives.vae_elbo(warmup_steps=10), optimizer={"name": "adam"},
                              epochs=2, batch_size=16, input_shape=(8,), verbose=0)
    np.testing.assert_allclose([row["val_kl_weight"] for row in result.histories[0]], [0.4, 0.8], rtol=1e-6)
