"""The fused layers' values and hand-written gradients against flax's GroupNorm + nn.silu and Dense
differentiated by jax.grad (an independent implementation of the same op)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models.fused_layers import Dense, GroupNormAct, materialized_cotangent


def _reference(x, gamma, beta, scale, shift, groups, act):
    norm = nn.GroupNorm(num_groups=groups, epsilon=1e-6)
    y = norm.apply({"params": {"scale": gamma, "bias": beta}}, x)
    if scale is not None:
        y = y * (1 + scale[:, None, None, :]) + shift[:, None, None, :]
    return nn.silu(y) if act else y


def _fused(x, gamma, beta, scale, shift, groups, act):
    module = GroupNormAct(num_groups=groups, act=act)
    return module.apply({"params": {"scale": gamma, "bias": beta}}, x, scale, shift)


@pytest.mark.parametrize("modulated", [False, True])
@pytest.mark.parametrize("act", [False, True])
@pytest.mark.parametrize("shape,groups", [((3, 4, 4, 8), 2), ((2, 8, 8, 32), 8), ((2, 2, 2, 6), 3)])
def test_matches_flax_group_norm_values_and_gradients(shape, groups, act, modulated):
    keys = jax.random.split(jax.random.PRNGKey(sum(shape) + groups), 7)
    b, c = shape[0], shape[-1]
    x = 2.0 + 3.0 * jax.random.normal(keys[0], shape)  # offset mean: the fast variance must hold
    gamma = 1 + 0.3 * jax.random.normal(keys[1], (c,))
    beta = 0.3 * jax.random.normal(keys[2], (c,))
    scale = 0.5 * jax.random.normal(keys[3], (b, c)) if modulated else None
    shift = 0.5 * jax.random.normal(keys[4], (b, c)) if modulated else None
    cot = jax.random.normal(keys[5], shape)

    def loss(fn):
        return lambda *args: jnp.vdot(fn(*args, groups, act), cot)

    args = (x, gamma, beta, scale, shift)
    np.testing.assert_allclose(
        _fused(*args, groups, act), _reference(*args, groups, act), rtol=1e-5, atol=1e-5
    )
    argnums = (0, 1, 2, 3, 4) if modulated else (0, 1, 2)
    got = jax.grad(loss(_fused), argnums=argnums)(*args)
    want = jax.grad(loss(_reference), argnums=argnums)(*args)
    for name, g, w in zip(["x", "gamma", "beta", "scale", "shift"], got, want):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4, err_msg=name)


def test_bfloat16_input_keeps_float32_statistics():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 8)) * 100 + 1000
    gamma, beta = jnp.ones(8), jnp.zeros(8)
    out = _fused(x.astype(jnp.bfloat16), gamma, beta, None, None, 2, False)
    assert out.dtype == jnp.bfloat16
    ref = _reference(x.astype(jnp.bfloat16).astype(jnp.float32), gamma, beta, None, None, 2, False)
    np.testing.assert_allclose(np.asarray(out, np.float32), ref, atol=0.05)


def test_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match="6 channels do not split into 4 groups"):
        GroupNormAct(num_groups=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 6)))


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 3, 6)])
def test_dense_matches_flax_dense_values_and_gradients(shape, use_bias):
    keys = jax.random.split(jax.random.PRNGKey(len(shape)), 3)
    x = jax.random.normal(keys[0], shape)
    module = Dense(4, use_bias=use_bias, bias_init=nn.initializers.normal(1.0))
    params = module.init(keys[1], x)
    cot = jax.random.normal(keys[2], (*shape[:-1], 4))
    reference = nn.Dense(4, use_bias=use_bias)

    def loss(fn):
        return lambda p, x: jnp.vdot(fn.apply(p, x), cot)

    np.testing.assert_allclose(module.apply(params, x), reference.apply(params, x), rtol=1e-6)
    got = jax.grad(loss(module), argnums=(0, 1))(params, x)
    want = jax.grad(loss(reference), argnums=(0, 1))(params, x)
    jax.tree.map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6), got, want)


def test_materialized_cotangent_is_the_identity_for_values_and_gradients():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 4))
    f = lambda x: jnp.sum(jnp.sin(materialized_cotangent(x * 2.0)) ** 2)
    g = lambda x: jnp.sum(jnp.sin(x * 2.0) ** 2)
    assert f(x) == g(x)
    np.testing.assert_allclose(jax.jit(jax.grad(f))(x), jax.grad(g)(x), rtol=1e-6)
