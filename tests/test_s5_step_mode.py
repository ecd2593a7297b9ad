"""Recurrent (streaming) mode of the whole S5 classifier equals its parallel mode step by step;
token encoders; the two-tower retrieval head."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models.s5 import S5Classifier, S5RetrievalClassifier

SMALL = dict(d_model=8, n_layers=3, state_size=8, blocks=2)


def trained_variables(model, x, **kw):
    """Init, then one training-mode pass so BatchNorm has non-trivial running statistics."""
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    variables = jax.jit(lambda x, kw: model.init(rngs, x, **kw))(x, kw)
    train = lambda v, x, kw: model.apply(v, x, train=True, mutable=["batch_stats"], **kw)
    _, updates = jax.jit(train)(variables, x, kw)
    return {**variables, **updates}


@pytest.mark.parametrize(
    "options",
    [
        dict(pooling="mean"),  # prenorm BatchNorm, half_glu1
        pytest.param(
            dict(
                pooling="last",
                norm="layer",
                prenorm=False,
                activation="full_glu",
                conj_sym=False,
                discretization="bilinear",
            ),
            marks=pytest.mark.slow,
        ),
    ],
)
def test_step_mode_equals_parallel_mode_on_every_prefix(options):
    model = S5Classifier(num_classes=5, **SMALL, **options)
    x = jax.random.normal(jax.random.key(2), (3, 12, 2))
    variables = trained_variables(model, x)
    if model.norm == "batch":  # the running statistics really differ from init
        mean = variables["batch_stats"]["encoder"]["layers_0"]["norm"]["mean"]
        assert float(jnp.abs(mean).max()) > 1e-3

    step = jax.jit(lambda s, x_t: model.apply(variables, s, x_t, method="step"))
    state = model.initial_state(3)
    streamed = []
    for t in range(x.shape[1]):
        state, logp = step(state, x[:, t])
        streamed.append(logp)
    streamed = np.stack(streamed, axis=0)  # (length, batch, classes)

    # Parallel reference: the classifier on every prefix x[:, :t+1] at once (a causal model:
    # the prefix is the sequence with `lengths` t+1; its tail is zeroed and not pooled).
    L, b = x.shape[1], x.shape[0]
    tiled = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * b, *x.shape[1:])
    prefix_lengths = jnp.repeat(jnp.arange(1, L + 1), b)
    want = jax.jit(model.apply)(variables, tiled, prefix_lengths).reshape(L, b, -1)
    np.testing.assert_allclose(streamed, np.asarray(want), atol=2e-5, rtol=1e-5)
    # The longest prefix is the plain call without lengths.
    full = jax.jit(model.apply)(variables, x)
    np.testing.assert_allclose(streamed[-1], np.asarray(full), atol=2e-5)


@pytest.mark.slow
def test_step_mode_with_tokens_and_timesteps():
    model = S5Classifier(
        num_classes=3, **SMALL, input_encoding="one_hot", vocab_size=7, pooling="mean"
    )
    tokens = jax.random.randint(jax.random.key(3), (2, 10), 0, 7)
    dt = jax.random.uniform(jax.random.key(4), (2, 10), minval=0.5, maxval=2.0)
    variables = trained_variables(model, tokens, timesteps=dt)
    state = model.initial_state(2)
    step = jax.jit(lambda s, x_t, dt_t: model.apply(variables, s, x_t, dt_t, method="step"))
    for t in range(10):
        state, logp = step(state, tokens[:, t], dt[:, t])
    want = jax.jit(lambda x, dt: model.apply(variables, x, timesteps=dt))(tokens, dt)
    np.testing.assert_allclose(np.asarray(logp), np.asarray(want), atol=2e-5, rtol=1e-5)


def test_bidirectional_model_refuses_step_mode():
    model = S5Classifier(num_classes=2, **SMALL, bidirectional=True)
    with pytest.raises(ValueError, match="step mode is causal.*bidirectional"):
        model.initial_state(2)
    x = jnp.ones((2, 4, 1))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    with pytest.raises(ValueError, match="step mode is causal.*bidirectional"):
        model.apply(variables, {"layers": (None,) * 3}, x[:, 0], method="step")


@pytest.mark.slow
def test_one_hot_encoder_is_dense_of_one_hot_vectors():
    """The lookup encoder equals the official one-hot -> nn.Dense with the same parameters."""
    model = S5Classifier(num_classes=3, **SMALL, input_encoding="one_hot", vocab_size=6)
    tokens = jnp.array([[0, 5, 2, 2], [1, 3, 4, 0]])
    variables = model.init(jax.random.key(0), tokens)
    enc = variables["params"]["encoder"]["encoder"]
    assert enc["kernel"].shape == (6, 8) and enc["bias"].shape == (8,)
    bound = model.bind(variables)
    got = bound.encoder.encoder(tokens)
    want = jax.nn.one_hot(tokens, 6) @ enc["kernel"] + enc["bias"]
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)
    # The official init: lecun_normal with fan-in = vocab_size (std 1/sqrt(6) before truncation).
    embed = S5Classifier(num_classes=3, **SMALL, input_encoding="embed", vocab_size=6)
    assert embed.init(jax.random.key(0), tokens)["params"]["encoder"]["encoder"][
        "embedding"
    ].shape == (6, 8)


def test_retrieval_two_tower_features_and_lengths():
    """[a, b, a-b, a*b] of the two mean-pooled towers, each pooled over its own true length."""
    model = S5RetrievalClassifier(
        num_classes=2, **SMALL, input_encoding="one_hot", vocab_size=9, bidirectional=True
    )
    docs = jax.random.randint(jax.random.key(5), (2, 2, 11), 1, 9)
    lengths = jnp.array([[11, 6], [4, 9]])
    variables = trained_variables(model, docs, lengths=lengths)
    apply = jax.jit(model.apply)
    logp = apply(variables, docs, lengths)
    assert logp.shape == (2, 2)

    # Reference from the parts: the shared encoder on all 4 documents (padded, with their
    # lengths), then pooling, features and MLP in NumPy.
    bound = model.bind(variables)
    params = variables["params"]
    h = np.asarray(bound.encoder(docs.reshape(4, 11), lengths=lengths.reshape(4)))
    for i in range(2):
        a, b = (h[2 * i + d, : int(lengths[i, d])].mean(axis=0) for d in range(2))
        feats = np.concatenate([a, b, a - b, a * b])
        hidden = jax.nn.gelu(feats @ params["mlp"]["kernel"] + params["mlp"]["bias"])
        logits = hidden @ params["decoder"]["kernel"] + params["decoder"]["bias"]
        np.testing.assert_allclose(
            np.asarray(logp[i]), np.asarray(jax.nn.log_softmax(logits)), atol=2e-5
        )
    # Garbage after the true length changes nothing.
    garbage = docs.at[1, 0, 4:].set(8)
    np.testing.assert_allclose(
        np.asarray(apply(variables, garbage, lengths)), np.asarray(logp), atol=1e-5
    )
