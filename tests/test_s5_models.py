"""S5 layer, encoder and classifier: shapes, options, padding, dropout and BatchNorm behaviour."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models.s5 import S5Classifier, S5Encoder, S5Layer

SMALL = dict(d_model=8, n_layers=2, state_size=8, blocks=2)
# One input shape for (almost) every test: the modules run eagerly, and eager ops
# compile once per shape.
X = jax.random.normal(jax.random.key(2), (2, 9, 3))


def init(model, x, **kw):
    return model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, x, **kw)


@pytest.mark.parametrize(
    "options",
    [
        dict(),  # official defaults: prenorm BatchNorm, half_glu1
        dict(activation="gelu", norm="layer", prenorm=False),
        dict(activation="half_glu2", bidirectional=True, pooling="last"),
        dict(activation="full_glu", norm="layer", discretization="bilinear", conj_sym=False),
    ],
)
def test_classifier_outputs_log_probs(options):
    model = S5Classifier(num_classes=5, **SMALL, **options)
    x = X
    variables = init(model, x)
    logp = model.apply(variables, x)
    assert logp.shape == (2, 5)
    np.testing.assert_allclose(np.asarray(jax.nn.logsumexp(logp, axis=-1)), 0.0, atol=1e-5)
    # Training mode runs with dropout and updates the BatchNorm statistics.
    model_drop = model.clone(dropout=0.1)
    _, updates = model_drop.apply(
        variables, x, train=True, rngs={"dropout": jax.random.key(3)}, mutable=["batch_stats"]
    )
    if model.norm == "batch":
        changed = jax.tree.map(
            lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"], variables["batch_stats"]
        )
        assert all(jax.tree.leaves(changed))
    else:
        assert "batch_stats" not in variables


def test_default_constructor_follows_official_cli():
    m = S5Classifier(num_classes=10)
    assert (m.n_layers, m.d_model, m.state_size, m.blocks) == (6, 128, 256, 8)
    assert (m.discretization, m.activation, m.conj_sym, m.prenorm, m.norm, m.bn_momentum) == (
        "zoh",
        "half_glu1",
        True,
        True,
        "batch",
        0.95,
    )
    assert (m.C_init, m.dt_min, m.dt_max, m.dropout, m.pooling) == (
        "trunc_standard_normal",
        1e-3,
        1e-1,
        0.0,
        "mean",
    )


def test_param_tree_layout():
    model = S5Classifier(num_classes=3, **SMALL)
    params = init(model, X)["params"]
    assert set(params) == {"encoder", "decoder"}
    assert set(params["encoder"]) == {"encoder", "layers_0", "layers_1"}
    assert set(params["encoder"]["layers_0"]) == {"norm", "ssm", "out2"}
    assert params["encoder"]["layers_0"]["ssm"]["B"].shape == (4, 8, 2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_padding_does_not_change_outputs(bidirectional, norm):
    """A padded batch with `lengths` gives the outputs of the unpadded sequences."""
    model = S5Classifier(num_classes=4, **SMALL, bidirectional=bidirectional, norm=norm)
    lengths = jnp.array([9, 5])
    x = X.at[1, 5:].set(100.0)  # garbage in the padding
    variables = init(model, x)
    # Non-trivial BatchNorm statistics, updated from the padded batch with its mask.
    _, upd = model.apply(variables, x, lengths, train=True, mutable=["batch_stats"])
    variables = {**variables, **upd}
    for pooling in ["mean", "last"]:  # the head has no parameters of its own per pooling
        pooled = model.clone(pooling=pooling)
        padded = pooled.apply(variables, x, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = pooled.apply(variables, x[i : i + 1, :n])
            np.testing.assert_allclose(
                np.asarray(padded[i]), np.asarray(alone[0]), atol=1e-5, rtol=1e-5
            )
    if norm == "batch":
        # The garbage did not reach the running statistics.
        mean = upd["batch_stats"]["encoder"]["layers_0"]["norm"]["mean"]
        assert float(jnp.abs(mean).max()) < 10.0


def test_dropout_mask_is_shared_over_time():
    layer = S5Layer(state_size=8, blocks=2, activation="gelu", norm="layer", dropout=0.5)
    x = jax.random.normal(jax.random.key(5), (2, 9, 8))  # the shape inside SMALL classifiers
    variables = init(layer, x)
    y = layer.apply(variables, x, train=True, rngs={"dropout": jax.random.key(6)})
    dropped = np.asarray(y == x)  # residual only: the block's branch was dropped
    per_channel = dropped.all(axis=1)
    assert np.array_equal(dropped.any(axis=1), per_channel)  # all or none of the steps
    assert 0 < per_channel.sum() < per_channel.size
    # Deterministic in eval mode.
    np.testing.assert_array_equal(
        np.asarray(layer.apply(variables, x)), np.asarray(layer.apply(variables, x))
    )


def test_step_rescale_and_timesteps_reach_the_ssm():
    model = S5Encoder(**SMALL)
    x = X
    variables = init(model, x)
    y = model.apply(variables, x)
    assert y.shape == (2, 9, 8)
    assert not np.allclose(
        np.asarray(model.clone(step_rescale=2.0).apply(variables, x)), np.asarray(y)
    )
    np.testing.assert_allclose(
        np.asarray(model.apply(variables, x, jnp.ones((2, 9)))), np.asarray(y), atol=1e-5
    )


def test_bad_options_raise():
    x = X
    for kw, match in [
        (dict(activation="relu"), "activation"),
        (dict(norm="group"), "norm"),
        (dict(pooling="max"), "pooling"),
        (dict(dropout=1.0), "dropout"),
    ]:
        with pytest.raises(ValueError, match=match):
            init(S5Classifier(num_classes=2, **SMALL, **kw), x)
    with pytest.raises(ValueError, match="batch, length, features"):
        init(S5Classifier(num_classes=2, **SMALL), jnp.ones((4, 1)))
