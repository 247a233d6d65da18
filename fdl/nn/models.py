"""Ready-made models, by name: the MNIST-1D reference models and the classic programs.

Every entry of MODELS is a function returning a Layer; configs name them
(`model: {name: mnist1d_cnn}`) and pass keyword arguments. Models that take a
flat signal `(length,)` add the channel axis themselves, so they train on the
built-in data as loaded. `generate` draws tokens from a trained language model
such as `gpt`; `resnet18` is the CIFAR ResNet-18 for 32x32x3 images.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jax.nn import initializers as jinit

from fdl.nn.activations import Activation
from fdl.nn.attention import NORMS, TransformerDecoderBlock
from fdl.nn.activations import Relu
from fdl.nn.combinators import FanInSum, parallel, residual, serial
from fdl.nn.conv import Conv1D, Conv2D
from fdl.nn.core import Layer, ShapeError, batched, child_key, expect_rank, init_child, named
from fdl.nn.dense import Dense
from fdl.nn.dropout import Dropout
from fdl.nn.embedding import Embedding, PositionalEmbedding
from fdl.nn.normalization import BatchNorm
from fdl.nn.pooling import GlobalAvgPool, MaxPool2D
from fdl.nn.recurrent import GRU, LSTM
from fdl.nn.reshape import Flatten, Reshape
from fdl.nn.transforms import remat as remat_layer, repeat

__all__ = ["MODELS", "logistic_regression", "mlp", "cnn1d", "gru_classifier", "lstm_classifier",
           "cnn2d", "resnet18", "autoencoder", "vae", "vae_decoder", "gpt", "generate"]


def logistic_regression(num_classes: int = 10) -> Layer:
    """Flatten -> Dense(num_classes): multinomial logistic regression on logits."""
    return serial(Flatten(), Dense(num_classes))


def mlp(hidden: Sequence[int] = (100, 100), num_classes: int = 10, *, activation: str = "relu",
        dropout: float = 0.0, w_init: str = "lecun_normal") -> Layer:
    """Flatten -> [Dense(h) -> activation -> Dropout?] per hidden width -> Dense(num_classes)."""
    layers = [Flatten()]
    for width in hidden:
        layers += [Dense(width, w_init=w_init), Activation(activation)]
        layers += [Dropout(dropout)] if dropout else []
    return serial(*layers, Dense(num_classes, w_init=w_init))


def cnn1d(channels: int = 25, kernel_sizes: Sequence[int] = (5, 3, 3), strides: int = 2,
          num_classes: int = 10, *, activation: str = "relu", implementation: str = "auto") -> Layer:
    """The MNIST-1D CNN: (length,) -> Reshape (length, 1) -> Conv1D x3 (SAME) -> Flatten -> Dense."""
    layers = [Reshape((-1, 1))]
    for kernel in kernel_sizes:
        layers += [Conv1D(channels, kernel, strides=strides, implementation=implementation),
                   Activation(activation)]
    return serial(*layers, Flatten(), Dense(num_classes))


def gru_classifier(hidden: int = 6, num_classes: int = 10, *, bidirectional: bool = True) -> Layer:
    """The MNIST-1D GRU: (length,) -> (length, 1) -> GRU over all steps -> Flatten -> Dense on all outputs."""
    return serial(Reshape((-1, 1)), GRU(hidden, return_sequences=True, bidirectional=bidirectional),
                  Flatten(), Dense(num_classes))


def lstm_classifier(hidden: int = 50, num_outputs: int = 1) -> Layer:
    """The Keras recurrent classifier: LSTM(hidden) last output -> Dense(num_outputs) logits."""
    return serial(Reshape((-1, 1)), LSTM(hidden), Dense(num_outputs))


def cnn2d(num_classes: int = 10) -> Layer:
    """The PyTorch CNN: Conv 32 3x3 -> ReLU -> MaxPool 2 -> Conv 64 3x3 -> ReLU -> MaxPool 2 -> fc 100 -> fc."""
    return serial(Conv2D(32, 3, padding="VALID"), Activation("relu"), MaxPool2D(2),
                  Conv2D(64, 3, padding="VALID"), Activation("relu"), MaxPool2D(2), Flatten(),
                  Dense(100), Activation("relu"), Dense(num_classes))


def resnet18(num_classes: int = 10, *, width: int = 64, batch_norm_momentum: float = 0.9,
             implementation: str = "lax") -> Layer:
    """The CIFAR ResNet-18 (He et al. 2016, as in kuangliu/pytorch-cifar): 32x32x3 images to logits.

    Per example, channels-last `(height, width, 3)` float (32x32 in the
    reference; any size the three stride-2 stages divide works) to
    `(num_classes,)` logits::

        stem:    Conv 3x3, w channels -> BatchNorm -> ReLU           (no max-pool: CIFAR)
        stage_s: 2 x BasicBlock(w * 2**s channels), s = 0..3; the first block of
                 stages 1-3 has stride 2
        pool:    GlobalAvgPool -> head: Dense(num_classes)

        BasicBlock(c, stride): relu(body(x) + shortcut(x))
          body     = Conv 3x3 c (stride) -> BN -> ReLU -> Conv 3x3 c -> BN
          shortcut = x                       (same shape: `residual`)
                   = Conv 1x1 c (stride) -> BN   (shape changes: `parallel` + `FanInSum`)

    Convolutions have no bias (the BatchNorm after each one has its own) and
    pad as PyTorch's `Conv2d(..., padding=1)` / `padding=0` do, so the weights
    and numbers of a PyTorch ResNet-18 carry over (kernels permuted to HWIO,
    see `fdl.nn.conv`). BatchNorm's `momentum` weights the old running value
    (fdl's convention): 0.9 is PyTorch's default 0.1.

    Params: `stem`, `stage_0` .. `stage_3` (each `block_0`, `block_1`), `head`;
    11,173,962 of them for width 64 and 10 classes. State: every BatchNorm's
    running `mean` and `var` (20 layers). Train with `loss="cross_entropy"`.

    Args:
      num_classes: logits per example.
      width: the stem's channels (64 in the paper); the stages have
        width, 2 width, 4 width and 8 width. Smaller widths make fast tests.
      batch_norm_momentum: every BatchNorm's `momentum` (weight of the old value).
      implementation: the convolutions' implementation (see `fdl.nn.Conv`). "lax",
        not "auto": auto's im2col on CPU is tuned for the small 1-D convs of
        MNIST-1D; for these 3x3 convs over 64-512 channels `lax.conv` trained
        2.4x faster on a 2-core CPU (batch 32), and it is what auto picks on
        accelerators.

    Raises:
      ValueError: a non-positive `num_classes` or `width` (constructor).
      ShapeError: input not `(height, width, channels)` (init).

    Example:
      >>> model = nn.models.resnet18(num_classes=10)
      >>> nn.output_shape(model, (32, 32, 3))
      (10,)
      >>> params = jax.eval_shape(lambda key: model.init(key, (32, 32, 3))[1], jax.random.key(0))
      >>> sorted(params)
      ['head', 'pool', 'stage_0', 'stage_1', 'stage_2', 'stage_3', 'stem']
      >>> sorted(params["stage_1"]["block_0"])  # a projected block: parallel(body, shortcut) -> sum -> relu
      ['fan_in_sum_1', 'parallel_0', 'relu_2']
      >>> params["stage_1"]["block_0"]["parallel_0"]["shortcut"]["conv2d_0"]["w"].shape
      (1, 1, 64, 128)
    """
    for name, value in (("num_classes", num_classes), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"resnet18: {name} must be a positive int, got {value!r}")

    def conv(features: int, kernel: int, strides: int = 1) -> Layer:
        return Conv2D(features, kernel, strides=strides, padding=kernel // 2, use_bias=False,
                      implementation=implementation)

    def norm() -> Layer:
        return BatchNorm(momentum=batch_norm_momentum)

    def basic_block(features: int, strides: int, project: bool) -> Layer:
        body = (conv(features, 3, strides), norm(), Relu(), conv(features, 3), norm())
        if not project:
            return serial(residual(*body), Relu())
        shortcut = serial(conv(features, 1, strides), norm())
        return serial(parallel(named("body", serial(*body)), named("shortcut", shortcut)),
                      FanInSum(), Relu())

    stages = []
    for s in range(4):
        features, strides = width * 2 ** s, 1 if s == 0 else 2
        # Stage 0 keeps the stem's shape; every later stage halves the image and doubles the channels.
        first = basic_block(features, strides, project=s > 0)
        stages.append(named(f"stage_{s}", serial(named("block_0", first),
                                                 named("block_1", basic_block(features, 1, False)))))
    return serial(named("stem", serial(conv(width, 3), norm(), Relu())), *stages,
                  named("pool", GlobalAvgPool()), named("head", Dense(num_classes)))


def autoencoder(bottleneck: int = 50, hidden: Sequence[int] = (256,), *,
                activation: str = "relu") -> Layer:
    """Dense autoencoder on flat inputs: encoder to `bottleneck`, mirrored decoder, linear output."""

    def build(input_size: int) -> Layer:
        encoder = [layer for width in hidden for layer in (Dense(width), Activation(activation))]
        decoder = [layer for width in reversed(hidden) for layer in (Dense(width), Activation(activation))]
        return serial(named("encoder", serial(Flatten(), *encoder, Dense(bottleneck))),
                      named("decoder", serial(*decoder, Dense(input_size))))

    return _sized_by_input("Autoencoder", build)


def vae(latent: int = 16, hidden: Sequence[int] = (256,), *, activation: str = "relu") -> Layer:
    """Variational autoencoder on flat inputs in [0, 1]; train it with loss "elbo_bernoulli".

    Output per example: `(reconstruction_logits (input_size,), mean (latent,), log_var (latent,))`.
    In train mode z = mean + exp(log_var / 2) * eps (reparameterization, eps from
    the layer's key); in eval mode z = mean. To sample from the prior, apply
    `vae_decoder(input_size, hidden)` with `params["decoder"]` to z ~ N(0, I).
    """

    def build(input_size: int) -> Layer:
        trunk = [layer for width in hidden for layer in (Dense(width), Activation(activation))]
        encoder = serial(Flatten(), *trunk, Dense(2 * latent))
        return _VAE(encoder, vae_decoder(input_size, hidden, activation=activation), latent)

    return _sized_by_input("VAE", build)


def vae_decoder(input_size: int, hidden: Sequence[int] = (256,), *, activation: str = "relu") -> Layer:
    """The VAE's decoder alone: z (latent,) -> reconstruction (input_size,); takes `params["decoder"]`."""
    back = [layer for width in reversed(hidden) for layer in (Dense(width), Activation(activation))]
    return serial(*back, Dense(input_size))


def _VAE(encoder: Layer, decoder: Layer, latent: int) -> Layer:
    def init(key, input_shape):
        _, enc_params, enc_state = init_child("VAE", 0, "encoder", encoder, key, input_shape)
        out, dec_params, dec_state = init_child("VAE", 1, "decoder", decoder, key, (latent,))
        return ((out[0],), (latent,), (latent,)), {"encoder": enc_params, "decoder": dec_params}, \
            {"encoder": enc_state, "decoder": dec_state}

    def apply(params, state, x, *, key=None, train=False):
        stats, enc_state = encoder.apply(params["encoder"], state["encoder"], x, train=train)
        mean, log_var = jnp.split(stats, 2)
        z = mean
        if train:
            if key is None:
                raise ValueError("VAE: train=True needs a key for the reparameterization noise")
            z = mean + jnp.exp(0.5 * log_var) * jax.random.normal(key, mean.shape, mean.dtype)
        reconstruction, dec_state = decoder.apply(params["decoder"], state["decoder"], z, train=train)
        return (reconstruction, mean, log_var), {"encoder": enc_state, "decoder": dec_state}

    return Layer(init, apply, "VAE")


def gpt(vocab_size: int, context: int, width: int, depth: int, heads: int, *,
        mlp_dim: int | None = None, dropout_rate: float = 0.0, positions: str = "learned",
        norm: str = "layer", activation="gelu", epsilon: float = 1e-5,
        tie_embeddings: bool = True, scan_layers: bool = True, remat: bool = False,
        remat_policy=None, implementation: str | None = None) -> Layer:
    """A decoder-only Transformer language model (GPT-2's layout; Llama's with rms/rotary).

    Per example: token ids `(length,)` int32, `length <= context`, to next-token
    logits `(length, vocab_size)` (position t sees tokens 0..t)::

        h = token_embedding[tokens] (+ position_embedding[:length] if positions="learned")
        h = Dropout(h); h = depth x TransformerDecoderBlock(h); h = final_norm(h)
        logits = h @ token_embedding.T           (tie_embeddings=True, GPT-2)
        logits = h @ head.w                      (tie_embeddings=False)

    Train it with `loss="cross_entropy"` on `(tokens[:-1], tokens[1:])` pairs.

    Params: `token_embedding.embedding: (vocab_size, width)` (N(0, 0.02²), as
    GPT-2); `position_embedding.embedding: (context, width)` with learned
    positions (none with rotary); `blocks`; `final_norm` (`scale`, and `bias`
    for LayerNorm); `head.w: (width, vocab_size)` only when the embeddings
    are not tied — with `tie_embeddings=True` there is no head param and the
    gradient of the output layer reaches the embedding table. With
    `scan_layers=True` the blocks are `repeat(block, depth)`: every leaf of
    `params["blocks"]` has a leading `(depth,)` axis and the program holds one
    block (compile time flat in depth); with False they are `serial` children
    `params["blocks"]["transformer_decoder_block_{i}"]`. The two compute the
    same function from the same (restacked) params.

    Args:
      vocab_size: number of token ids.
      context: the longest sequence (rows of the learned position table).
      width: model width (features per token); `heads` must divide it.
      depth: number of blocks.
      heads: attention heads per block.
      mlp_dim: the blocks' MLP width; default `4 * width` (GPT-2).
      dropout_rate: embedding, residual and attention-weight dropout (GPT-2: 0.1).
      positions: "learned" (GPT-2's table) or "rotary" (RoPE in every block's
        attention, GPT-NeoX's rotate-half layout).
      norm: "layer" (LayerNorm, GPT-2) or "rms" (RMSNorm, Llama), in the
        blocks and the final norm.
      activation: the MLP's activation (see `TransformerDecoderBlock`).
      epsilon: the norms' epsilon.
      tie_embeddings: the output head is the transposed token embedding.
      scan_layers: stack the blocks with `repeat` (True) or `serial` (False).
      remat: recompute each block's activations in the backward pass
        (`fdl.nn.remat`), with `remat_policy` (None or a policy name/callable).
      implementation: the attention's `jax.nn.dot_product_attention` implementation.

    Raises:
      ValueError: bad arguments (constructor).
      ShapeError: input not `(length,)` or longer than `context`, or width not
        divisible by heads (init).

    Example:
      >>> model = nn.models.gpt(vocab_size=50, context=16, width=32, depth=2, heads=4)
      >>> nn.output_shape(model, (16,))
      (16, 50)
      >>> params = jax.eval_shape(lambda key: model.init(key, (16,))[1], jax.random.key(0))
      >>> sorted(params)  # tied embeddings: no head
      ['blocks', 'dropout', 'final_norm', 'position_embedding', 'token_embedding']
      >>> params["blocks"]["residual_0"]["multi_head_self_attention_1"]["query"]["w"].shape
      (2, 32, 4, 8)
    """
    for name, value in (("vocab_size", vocab_size), ("context", context), ("width", width),
                        ("depth", depth), ("heads", heads)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"gpt: {name} must be a positive int, got {value!r}")
    if positions not in ("learned", "rotary"):
        raise ValueError(f"gpt: positions must be 'learned' or 'rotary', got {positions!r}")
    if norm not in NORMS:
        raise ValueError(f"gpt: norm must be 'layer' (LayerNorm) or 'rms' (RMSNorm), got {norm!r}")
    block = TransformerDecoderBlock(heads, mlp_dim or 4 * width, dropout_rate=dropout_rate,
                                    activation=activation, epsilon=epsilon, norm=norm,
                                    rotary=positions == "rotary", implementation=implementation)
    if remat:
        block = remat_layer(block, remat_policy, prevent_cse=not scan_layers)
    children = {
        "token_embedding": Embedding(vocab_size, width, w_init=jinit.normal(stddev=0.02)),
        "position_embedding": PositionalEmbedding(context, width) if positions == "learned" else None,
        "dropout": Dropout(dropout_rate),
        "blocks": repeat(block, depth) if scan_layers else serial(*[block] * depth),
        "final_norm": NORMS[norm](epsilon=epsilon),
        "head": None if tie_embeddings else Dense(vocab_size, use_bias=False),
    }
    # Child i keeps index i whichever children exist, so its keys never depend on the options.
    used = [(i, name, layer) for i, (name, layer) in enumerate(children.items()) if layer is not None]

    def init(key, input_shape):
        expect_rank("GPT", input_shape, 1, "(length,) int token ids",
                    "pass one sequence of token ids per example")
        if input_shape[0] > context:
            raise ShapeError("GPT", f"sequence length {input_shape[0]} exceeds context={context} — "
                             "crop the sequences or build gpt with a longer context")
        params, state, shape = {}, {}, tuple(input_shape)
        for i, name, layer in used:
            shape, params[name], state[name] = init_child("gpt", i, name, layer, key, shape)
        return tuple(input_shape) + (vocab_size,), params, state

    def apply(params, state, tokens, *, key=None, train=False):
        h, new_state = tokens, {}
        for i, name, layer in used:
            if name == "head":
                continue
            h, new_state[name] = layer.apply(params[name], state[name], h,
                                             key=child_key(key, i), train=train)
        if tie_embeddings:
            table = params["token_embedding"]["embedding"]
            logits = jnp.einsum("tf,vf->tv", h, table.astype(h.dtype))
        else:
            logits, new_state["head"] = children["head"].apply(params["head"], state["head"], h)
        return logits, new_state

    return Layer(init, apply, "GPT")


def generate(model: Layer, params, model_state, prompt_tokens, length: int, key, temperature=1.0, *,
             context: int) -> jax.Array:
    """Continues `prompt_tokens` by `length` tokens drawn one at a time from a causal language model.

    Step i feeds the model (eval mode) the window of the last `context` tokens,
    zero-padded on the right while the sequence is shorter, reads the logits
    at the last real position and draws the next token::

        token = argmax(logits)                                   temperature == 0 (greedy)
        token ~ softmax(logits / temperature)                    temperature > 0

    with the key `fold_in(key, i)`. The model must be causal (the logits at
    position t depend on tokens 0..t only, as `gpt`'s), so the padding never
    changes them. The whole loop is one compiled program: a `lax.fori_loop`
    over a fixed-size token buffer, one window shape, `temperature` traced (a
    new temperature does not change the program); each call compiles it once.

    Example (a bigram model: an embedding table whose row for the last token is
    the next token's logits; for a trained `gpt` pass its state's params):
      >>> bigram = Embedding(16, 16)
      >>> _, table, table_state = bigram.init(jax.random.key(0), (8,))
      >>> out = generate(bigram, table, table_state, [3, 1, 4], 12, jax.random.key(1), 0.0, context=8)
      >>> out.shape, out.dtype, out[:3].tolist()          # the prompt, then 12 drawn tokens
      ((15,), dtype('int32'), [3, 1, 4])
      >>> greedy = [3, 1, 4]
      >>> for _ in range(12):
      ...     greedy.append(int(table["embedding"][greedy[-1]].argmax()))
      >>> out.tolist() == greedy
      True

    Args:
      model: a Layer mapping `(context,)` int token ids to `(context, vocab)` logits.
      params, model_state: the model's (e.g. a TrainState's `.params`, `.model_state`).
      prompt_tokens: `(prompt_length,)` int token ids, prompt_length >= 1; only the
        last `context` of them reach the model.
      length: tokens to draw, >= 1.
      key: a PRNG key (unused at temperature 0).
      temperature: softmax temperature, >= 0 (a float or a traced scalar); 0 is greedy.
      context: the window the model reads, e.g. the `context` `gpt` was built with.

    Returns:
      `(prompt_length + length,)` int32: the prompt followed by the drawn tokens.

    Raises:
      ValueError: a prompt that is not a non-empty 1-D sequence of ids, `length` or
        `context` not a positive int, or a negative (concrete) temperature.
    """
    prompt = jnp.asarray(prompt_tokens)
    if prompt.ndim != 1 or prompt.shape[0] == 0 or not jnp.issubdtype(prompt.dtype, jnp.integer):
        raise ValueError(f"generate: prompt_tokens must be (prompt_length >= 1,) int token ids, got shape "
                         f"{tuple(prompt.shape)} dtype {prompt.dtype} — encode the prompt first, e.g. "
                         "list(text.encode()) for a byte-level model")
    for name, value in (("length", length), ("context", context)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"generate: {name} must be a positive int, got {value!r}")
    if isinstance(temperature, (int, float)) and temperature < 0:
        raise ValueError(f"generate: temperature must be >= 0 (0: greedy), got {temperature!r}")
    start_length, apply = prompt.shape[0], batched(model)
    buffer = jnp.zeros(max(start_length + length, context), jnp.int32).at[:start_length].set(prompt)

    def draw(params, model_state, buffer, key, temperature):
        def step(i, tokens):
            position = start_length + i  # the index this step fills
            first = jnp.maximum(position - context, 0)
            window = jax.lax.dynamic_slice(tokens, (first,), (context,))
            logits = apply(params, model_state, window[None])[0][0, position - 1 - first]
            scaled = logits / jnp.where(temperature > 0, temperature, 1.0)
            sampled = jax.random.categorical(jax.random.fold_in(key, i), scaled)
            token = jnp.where(temperature > 0, sampled, jnp.argmax(logits))
            return tokens.at[position].set(token.astype(jnp.int32))

        return jax.lax.fori_loop(0, length, step, buffer)

    tokens = jax.jit(draw)(params, model_state, buffer, key, jnp.asarray(temperature, jnp.float32))
    return tokens[:start_length + length]


def _sized_by_input(kind: str, build: Callable[[int], Layer]) -> Layer:
    """A layer whose structure depends on the flattened input size, known only at init."""

    def flat_size(shape) -> int:
        size = 1
        for d in shape:
            size *= d
        return size

    def init(key, input_shape):
        return build(flat_size(input_shape)).init(key, input_shape)

    def apply(params, state, x, *, key=None, train=False):
        return build(x.size).apply(params, state, x, key=key, train=train)

    return Layer(init, apply, kind)


MODELS: dict[str, Callable[..., Layer]] = {
    "logistic_regression": logistic_regression,
    "mlp": mlp,
    "mnist1d_mlp": mlp,
    "cnn1d": cnn1d,
    "mnist1d_cnn": cnn1d,
    "gru_classifier": gru_classifier,
    "mnist1d_gru": gru_classifier,
    "lstm_classifier": lstm_classifier,
    "cnn2d": cnn2d,
    "resnet18": resnet18,
    "autoencoder": autoencoder,
    "vae": vae,
    "gpt": gpt,
}

