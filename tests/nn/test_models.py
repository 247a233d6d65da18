"""fdl.nn.models.gpt: shapes, tied embeddings, causality, options and errors (tiny sizes)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl import nn
from fdl.nn.core import ShapeError
from fdl.nn.models import MODELS, gpt

TOL = dict(rtol=1e-5, atol=1e-5)  # float32, one block of width 8
VOCAB, CONTEXT, WIDTH = 11, 6, 8
TOKENS = jnp.array([3, 1, 4, 1, 5], jnp.int32)  # shorter than the context


def init(model, input_shape=(len(TOKENS),), seed=0):
    """`model.init` as one compiled program (op-by-op init costs seconds on a CPU)."""
    box = {}

    def params_and_state(key):
        box["shape"], params, state = model.init(key, input_shape)
        return params, state

    params, state = jax.jit(params_and_state)(jax.random.key(seed))
    return box["shape"], params, state


def small(**kwargs):
    return gpt(VOCAB, CONTEXT, WIDTH, 1, 2, **kwargs)


def test_tied_head_is_the_transposed_embedding():
    tied, untied = small(), small(tie_embeddings=False)
    out_shape, params, state = init(tied)
    _, untied_params, untied_state = init(untied)
    assert out_shape == (len(TOKENS), VOCAB) and MODELS["gpt"] is gpt
    assert set(params) == {"token_embedding", "position_embedding", "dropout", "blocks", "final_norm"}
    assert untied_params["head"]["w"].shape == (WIDTH, VOCAB) and "b" not in untied_params["head"]
    # Same keys per child whichever children exist: the shared parts start equal.
    jax.tree.map(np.testing.assert_array_equal, {k: v for k, v in untied_params.items() if k != "head"}, params)
    table = params["token_embedding"]["embedding"]
    with_head = dict(params, head={"w": table.T})  # the untied model computes h @ head.w

    def logits_and_grads(model, params, state):
        def loss(params):
            logits, _ = model.apply(params, state, TOKENS)
            return jnp.sum(jnp.sin(logits)), logits
        return jax.jit(jax.grad(loss, has_aux=True))(params)

    grads, logits = logits_and_grads(tied, params, state)
    head_grads, head_logits = logits_and_grads(untied, with_head, untied_state)
    assert logits.shape == (len(TOKENS), VOCAB)
    np.testing.assert_allclose(logits, head_logits, **TOL)  # logits = h @ E.T
    # The tied table gets the input-side and the output-side gradient.
    np.testing.assert_allclose(grads["token_embedding"]["embedding"],
                               head_grads["token_embedding"]["embedding"] + head_grads["head"]["w"].T, **TOL)


@pytest.mark.parametrize("options", [dict(), dict(positions="rotary", norm="rms", scan_layers=False)],
                         ids=["gpt2_style", "llama_style"])
def test_logits_are_causal(options):
    model = small(**options)
    _, params, state = init(model)
    apply = jax.jit(lambda tokens: model.apply(params, state, tokens)[0])
    logits = apply(TOKENS)
    changed = apply(TOKENS.at[3].set(9))
    np.testing.assert_allclose(changed[:3], logits[:3], **TOL)  # position t sees tokens 0..t only
    assert not np.allclose(changed[3:], logits[3:])
    if options.get("positions") == "rotary":
        assert "position_embedding" not in params
        assert params["final_norm"].keys() == {"scale"}  # RMSNorm: no bias


def test_dropout_only_in_training():
    model = small(dropout_rate=0.5)
    _, params, state = init(model)
    apply = jax.jit(lambda key, train: model.apply(params, state, TOKENS, key=key, train=train)[0],
                    static_argnums=1)
    evaluation, training = apply(jax.random.key(1), False), apply(jax.random.key(1), True)
    np.testing.assert_array_equal(evaluation, apply(jax.random.key(2), False))
    assert not np.allclose(training, evaluation)


def test_summary_and_errors():
    assert "total params" in nn.summary(small(), (CONTEXT,))
    with pytest.raises(ShapeError, match=r"^GPT: sequence length 7 exceeds context=6 — crop the sequences"):
        small().init(jax.random.key(0), (CONTEXT + 1,))
    with pytest.raises(ShapeError, match=r"^GPT: expected input \(length,\) int token ids, got \(6, 1\)"):
        small().init(jax.random.key(0), (CONTEXT, 1))
    with pytest.raises(ShapeError, match=r"^gpt\[3\]\.repeat\.TransformerDecoderBlock.* features 8 is not "
                                         r"divisible by num_heads 3"):
        gpt(VOCAB, CONTEXT, WIDTH, 1, 3).init(jax.random.key(0), (CONTEXT,))
    for make, match in [(lambda: gpt(VOCAB, CONTEXT, WIDTH, 0, 2), r"^gpt: depth must be a positive int, got 0$"),
                        (lambda: small(positions="sinusoidal"), r"^gpt: positions must be 'learned' or 'rotary'"),
                        (lambda: small(norm="group"), r"^gpt: norm must be 'layer' \(LayerNorm\) or 'rms'"),
                        (lambda: small(remat=True, remat_policy="dots"), r"^remat: unknown policy 'dots'")]:
        with pytest.raises(ValueError, match=match):
            make()
