"""fdl.nn.models.gpt: shapes, tied embeddings, causality, options and errors (tiny sizes); generate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fdl import nn
from fdl.nn.core import ShapeError
from fdl.nn.models import MODELS, generate, gpt

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


# --- generate ---------------------------------------------------------------------------------

PROMPT, DRAWN = [3, 1, 4, 1, 5], 6  # 5 < CONTEXT tokens first (a padded window), 11 > CONTEXT at the end


def greedy_by_hand(model, params, state, prompt, length):
    """The reference: one argmax call per token on the unpadded last CONTEXT tokens (no fixed window)."""
    step = jax.jit(lambda window: nn.batched(model)(params, state, window[None])[0][0, -1])
    tokens = list(prompt)
    for _ in range(length):
        tokens.append(int(jnp.argmax(step(jnp.asarray(tokens[-CONTEXT:], jnp.int32)))))
    return tokens


def counting_model(vocab=VOCAB):
    """Hand-set and causal: position t's logits peak (by 10) at sum(tokens[:t + 1] + 1) mod vocab.

    The + 1 makes every token count, padding zeros too, so reading the logits of a wrong
    position, or a window that is not the last CONTEXT tokens, changes the answer.
    """
    def init(key, input_shape):
        return tuple(input_shape) + (vocab,), {}, {}

    def apply(params, state, tokens, *, key=None, train=False):
        return 10.0 * jax.nn.one_hot(jnp.cumsum(tokens + 1) % vocab, vocab), state

    return nn.Layer(init, apply, "Counting")


def test_generate_at_low_temperature_is_the_greedy_loop():
    tokens = list(PROMPT)
    for _ in range(DRAWN):  # the hand-computed answer of counting_model
        tokens.append(sum(t + 1 for t in tokens[-CONTEXT:]) % VOCAB)
    model = counting_model()
    assert greedy_by_hand(model, {}, {}, PROMPT, DRAWN) == tokens == [3, 1, 4, 1, 5, 8, 6, 9, 6, 8, 4]
    for temperature in (0.0, 1e-6):  # exactly greedy, and the limit of sampling
        out = generate(model, {}, {}, jnp.array(PROMPT), DRAWN, jax.random.key(3), temperature, context=CONTEXT)
        assert out.dtype == jnp.int32 and out.tolist() == tokens, (temperature, out.tolist())


def test_generate_from_gpt_is_the_greedy_loop_of_single_steps():
    model = small(tie_embeddings=False)
    rng = np.random.default_rng(1)  # any weights will do (init compiles for seconds; eval_shape does not)
    shapes = jax.eval_shape(lambda key: model.init(key, (CONTEXT,))[1:], jax.random.key(0))
    params, state = jax.tree.map(lambda leaf: jnp.asarray(0.5 * rng.normal(size=leaf.shape), leaf.dtype), shapes)
    out = generate(model, params, state, PROMPT, DRAWN, jax.random.key(0), 0.0, context=CONTEXT)
    assert out.tolist() == greedy_by_hand(model, params, state, PROMPT, DRAWN)


def constant_logits(logits):
    """A (trivially causal) model whose logits at every position are `logits`."""
    def init(key, input_shape):
        return tuple(input_shape) + (len(logits),), {}, {}

    def apply(params, state, tokens, *, key=None, train=False):
        return jnp.broadcast_to(jnp.asarray(logits, jnp.float32), tokens.shape + (len(logits),)), state

    return nn.Layer(init, apply, "ConstantLogits")


def test_generate_draws_from_the_tempered_softmax_reproducibly():
    # Every step draws from softmax(log p / T) ∝ p ** (1 / T): at T = 2, p = (.5, .25, .25) gives (.414, .293, .293).
    model, draws = constant_logits(np.log([0.5, 0.25, 0.25])), 3000
    out = generate(model, {}, {}, [0], draws, jax.random.key(0), 2.0, context=4)
    frequencies = np.bincount(np.asarray(out[1:]), minlength=3) / draws
    np.testing.assert_allclose(frequencies, np.sqrt([0.5, 0.25, 0.25]) / np.sqrt([0.5, 0.25, 0.25]).sum(),
                               atol=0.03)  # 3.3 binomial standard deviations at n = 3000
    assert generate(model, {}, {}, [0], draws, jax.random.key(0), 2.0, context=4).tolist() == out.tolist()


@pytest.mark.parametrize("prompt, length, temperature, context, message", [
    ([], 4, 1.0, CONTEXT, r"^generate: prompt_tokens must be \(prompt_length >= 1,\) int token ids, got shape \(0,\)"),
    ([1.5], 4, 1.0, CONTEXT, r"^generate: prompt_tokens must be .* dtype float32 — encode the prompt first"),
    ([1], 0, 1.0, CONTEXT, r"^generate: length must be a positive int, got 0$"),
    ([1], 4, 1.0, None, r"^generate: context must be a positive int, got None$"),
    ([1], 4, -0.5, CONTEXT, r"^generate: temperature must be >= 0 \(0: greedy\), got -0.5$"),
], ids=["empty", "floats", "length", "context", "temperature"])
def test_generate_refuses_bad_arguments(prompt, length, temperature, context, message):
    with pytest.raises(ValueError, match=message):
        generate(constant_logits([0.0, 0.0]), {}, {}, prompt, length, jax.random.key(0), temperature,
                 context=context)
