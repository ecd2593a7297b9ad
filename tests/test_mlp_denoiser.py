"""MLP denoiser for low-dimensional data: shapes, conditioning, a few training steps."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml.models.mlp_denoiser import MLPDenoiser

fast_jit = functools.partial(
    jax.jit,
    compiler_options={
        "xla_backend_optimization_level": 0,
        "xla_llvm_disable_expensive_passes": True,
        "xla_cpu_use_fusion_emitters": False,
    },
)


def normal(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


@pytest.mark.parametrize("embedding_type", ["positional", "fourier"])
def test_shapes_and_near_zero_init(embedding_type):
    model = MLPDenoiser(hidden=32, depth=2, embedding_type=embedding_type)
    x, c = normal((5, 2)), normal((5,), 1)
    variables = fast_jit(model.init)(jax.random.PRNGKey(0), x, c)
    out = fast_jit(model.apply)(variables, x, c)
    assert out.shape == (5, 2) and out.dtype == jnp.float32
    assert 0 < float(jnp.max(jnp.abs(out))) < 1e-3  # output layer starts near zero

    wide = MLPDenoiser(hidden=32, depth=1, out_features=3)
    assert jax.eval_shape(wide.init_with_output, jax.random.PRNGKey(0), x, c)[0].shape == (5, 3)


def test_noise_level_and_labels_change_the_output():
    model = MLPDenoiser(hidden=32, depth=2, num_classes=4, label_dropout=0.5)
    batch = 16
    x = jnp.tile(normal((1, 3)), (batch, 1))
    labels = jnp.arange(batch) % 4
    c = jnp.zeros((batch,))
    params = fast_jit(model.init)(jax.random.PRNGKey(0), x, c, labels)["params"]
    # Wake the near-zero output layer so differences are well above round-off.
    params["out"]["kernel"] = normal(params["out"]["kernel"].shape, 2)
    apply = fast_jit(model.apply, static_argnames="train")
    variables = {"params": params}

    cond = apply(variables, x, c, labels)
    assert float(jnp.max(jnp.abs(cond[0] - cond[1]))) > 1e-3
    np.testing.assert_allclose(cond[0], cond[4], atol=1e-6)
    other_sigma = apply(variables, x, c + 1.0, labels)
    assert float(jnp.max(jnp.abs(cond - other_sigma))) > 1e-3
    null = apply(variables, x, c, jnp.full((batch,), -1))
    np.testing.assert_allclose(apply(variables, x, c, None), null, atol=1e-6)
    dropped = apply(variables, x, c, labels, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    is_null = np.array([np.allclose(dropped[i], null[i], atol=1e-6) for i in range(batch)])
    is_cond = np.array([np.allclose(dropped[i], cond[i], atol=1e-6) for i in range(batch)])
    assert np.all(is_null ^ is_cond) and 0 < is_null.sum() < batch


def test_bad_options_raise():
    x = jax.ShapeDtypeStruct((4, 2), jnp.float32)
    c = jax.ShapeDtypeStruct((4,), jnp.float32)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="embedding_type"):
        jax.eval_shape(MLPDenoiser(embedding_type="rff").init, key, x, c)
    with pytest.raises(ValueError, match="unconditional"):
        jax.eval_shape(MLPDenoiser().init, key, x, c, jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match="c_noise"):
        jax.eval_shape(MLPDenoiser().init, key, x, jax.ShapeDtypeStruct((3,), jnp.float32))
    with pytest.raises(ValueError, match="batch, features"):
        jax.eval_shape(MLPDenoiser().init, key, jax.ShapeDtypeStruct((4, 2, 2), jnp.float32), c)


def test_adam_steps_lower_denoising_loss():
    # Two clusters in 2-D, noised at one σ: the denoiser learns to pull points back.
    rng = np.random.default_rng(0)
    clean = jnp.asarray(
        np.where(rng.random((64, 1)) < 0.5, -1.0, 1.0) * np.ones((64, 2)), jnp.float32
    )
    noisy = clean + 0.5 * normal(clean.shape, 1)
    c = jnp.full((64,), np.log(0.5) / 4, jnp.float32)
    model = MLPDenoiser(hidden=64, depth=2)
    params = fast_jit(model.init)(jax.random.PRNGKey(0), noisy, c)["params"]
    tx = optax.adam(3e-3)

    @fast_jit
    def step(params, opt_state):
        def loss_fn(p):
            return jnp.mean(jnp.square(noisy + model.apply({"params": p}, noisy, c) - clean))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    losses = []
    for _ in range(40):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]
