"""jaxml's Dropout against flax.linen.Dropout and jax.random (the field's own implementations)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxml.models.dropout import Dropout, bernoulli_mask, threefry2x32


def test_threefry_matches_the_published_known_answers():
    # Random123's known-answer vectors for threefry2x32 with 20 rounds (kat_vectors).
    cases = [
        ((0x0, 0x0), (0x0, 0x0), (0x6B200159, 0x99BA4EFE)),
        ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
        ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
    ]
    for key, count, expected in cases:
        k = [jnp.uint32(v) for v in key]
        x = [jnp.array([v], jnp.uint32) for v in count]
        out = threefry2x32(*k, *x)
        assert [int(o[0]) for o in out] == list(expected)


@pytest.mark.parametrize(
    "shape,keep_prob", [((7,), 0.123), ((128, 8, 8, 16), 0.9), ((3, 5, 1, 33), 0.5)]
)
def test_bernoulli_mask_equals_jax_random(shape, keep_prob):
    key = jax.random.key(11)
    ours = jax.jit(lambda k: bernoulli_mask(k, keep_prob, shape))(key)
    ref = jax.jit(lambda k: jax.random.bernoulli(k, keep_prob, shape))(key)
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize(
    "key_fn,broadcast_dims",
    [(jax.random.key, ()), (jax.random.PRNGKey, (1,)), (jax.random.key, (-2,))],
)
def test_dropout_layer_equals_flax(key_fn, broadcast_dims):
    x = jax.random.normal(jax.random.key(0), (16, 6, 6, 8))
    rngs = {"dropout": key_fn(5)}

    def run(layer):
        return jax.jit(lambda x: layer.apply({}, x, rngs=rngs))(x)

    ours = run(Dropout(0.3, broadcast_dims=broadcast_dims, deterministic=False))
    ref = run(nn.Dropout(0.3, broadcast_dims=broadcast_dims, deterministic=False))
    np.testing.assert_array_equal(ours, ref)
    kept = np.asarray(ours != 0).mean()
    assert 0.6 < kept < 0.8

    # Gradient: the mask scaled by 1/keep, as flax's.
    def grad(layer):
        return jax.grad(lambda x: layer.apply({}, x, rngs=rngs).sum())(x)

    np.testing.assert_array_equal(
        grad(Dropout(0.3, deterministic=False)), grad(nn.Dropout(0.3, deterministic=False))
    )


def test_dropout_edge_rates_and_other_prng_impls():
    x = jnp.ones((4, 5))
    rngs = {"dropout": jax.random.key(1)}
    assert (Dropout(0.0, deterministic=False).apply({}, x, rngs=rngs) == x).all()
    assert (Dropout(0.5, deterministic=True).apply({}, x) == x).all()
    assert (Dropout(1.0, deterministic=False).apply({}, x, rngs=rngs) == 0).all()
    # A non-Threefry key takes jax.random's path.
    rbg = {"dropout": jax.random.key(1, impl="rbg")}
    ours = Dropout(0.5, deterministic=False).apply({}, x, rngs=rbg)
    ref = nn.Dropout(0.5, deterministic=False).apply({}, x, rngs=rbg)
    np.testing.assert_array_equal(ours, ref)
