"""EDM's EMA schedule: closed forms, half-life, ramp-up, and use inside the jitted train step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxml import parallel, training
from jaxml.training import ema
from jaxml.training.ema import edm_ema_decay, ema_decay_from_halflife_steps, make_edm_ema_decay
from jaxml.training.step import ema_update


def edm_beta(step, batch_size, halflife_kimg, rampup_ratio):
    """NVlabs/edm training_loop.py, in float64 numpy."""
    halflife_nimg = halflife_kimg * 1000
    if rampup_ratio is not None:
        halflife_nimg = min(halflife_nimg, step * batch_size * rampup_ratio)
    return 0.5 ** (batch_size / max(halflife_nimg, 1e-8))


def test_matches_the_edm_formula_and_jits():
    decay = jax.jit(lambda s: edm_ema_decay(s, 512, 500, 0.05))
    for step in [0, 1, 10, 1000, 19531, 19532, 100_000, 2**30]:
        np.testing.assert_allclose(
            float(decay(jnp.int32(step))), edm_beta(step, 512, 500, 0.05), rtol=1e-6
        )
    # Step 0: half-life 0, so the EMA starts as a copy of the params.
    assert float(edm_ema_decay(0, 64)) == 0.0


def test_halflife_without_rampup():
    batch, kimg = 50, 2.0  # half-life 2000 images = 40 steps
    beta = float(edm_ema_decay(123, batch, kimg, ema_rampup_ratio=None))
    np.testing.assert_allclose(beta ** (kimg * 1000 / batch), 0.5, rtol=1e-5)  # β is float32
    assert ema_decay_from_halflife_steps(40) == pytest.approx(beta, rel=1e-6)


def test_rampup_caps_the_halflife():
    batch, ratio = 64, 0.05
    for step in [10, 200, 5000]:
        beta = float(edm_ema_decay(step, batch, 500, ratio))
        capped = min(500_000, ratio * step * batch)
        np.testing.assert_allclose(beta, 0.5 ** (batch / capped), rtol=1e-6)
    # Long after the ramp-up, the configured half-life applies.
    late = float(edm_ema_decay(10**7, batch, 500, ratio))
    np.testing.assert_allclose(late, 0.5 ** (batch / 500_000), rtol=1e-6)


def test_constant_params_give_the_geometric_closed_form():
    # ema_K = c + (e0 - c) · Π β_t, here with a constant β (no ramp-up): β^K.
    batch, kimg, steps = 16, 0.4, 75
    e0, c = jnp.full((3,), 2.0), jnp.full((3,), -1.0)

    def body(ema, step):
        return ema_update(ema, c, edm_ema_decay(step, batch, kimg, None)), None

    ema, _ = jax.lax.scan(body, e0, jnp.arange(steps))
    beta = 0.5 ** (batch / (kimg * 1000))
    np.testing.assert_allclose(ema, c + (e0 - c) * beta**steps, rtol=1e-5)
    # After one half-life in images (25 steps) the old value weighs 0.5.
    ema, _ = jax.lax.scan(body, e0, jnp.arange(25))
    np.testing.assert_allclose(ema, c + (e0 - c) * 0.5, rtol=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="batch_size"):
        make_edm_ema_decay(0)
    with pytest.raises(ValueError, match="ema_rampup_ratio"):
        edm_ema_decay(1, 8, 500, -0.1)
    with pytest.raises(ValueError, match="halflife_steps"):
        ema_decay_from_halflife_steps(0)


def test_in_make_train_step():
    # SGD on loss = <w, g> moves w by -lr·g per step: a known params sequence.
    batch, lr, steps = 8, 0.1, 6
    mesh = parallel.make_mesh({"data": 1}, jax.devices()[:1])
    tx = optax.sgd(lr)
    g = jnp.array([1.0, -2.0])

    def loss_fn(params, model_state, batch_, rng):
        return jnp.sum(params["w"] * g), (model_state, {})

    state, shardings = training.create_train_state(
        lambda rng: {"params": {"w": jnp.zeros(2)}}, tx, jax.random.PRNGKey(0), mesh, use_ema=True
    )
    step = training.make_train_step(
        loss_fn,
        tx,
        state_shardings=shardings,
        batch_sharding=parallel.batch_sharding(mesh),
        ema_decay=make_edm_ema_decay(batch, ema_halflife_kimg=0.5, ema_rampup_ratio=0.5),
    )
    dummy = parallel.global_batch(
        {"x": np.zeros((batch, 1), np.float32)}, parallel.batch_sharding(mesh)
    )
    expected = np.zeros(2)
    for t in range(steps):
        state, _ = step(state, dummy)
        params_t = -lr * (t + 1) * np.asarray(g)
        beta = edm_beta(t, batch, 0.5, 0.5)
        expected = beta * expected + (1 - beta) * params_t
    np.testing.assert_allclose(state.ema_params["w"], expected, rtol=1e-5)
    assert not np.allclose(state.ema_params["w"], state.params["w"])


@pytest.mark.parametrize("sigma_rel", [0.063, 0.1, 0.15, 0.2])
def test_rampup_ratio_for_sigma_rel_matches_the_simulated_profile(sigma_rel):
    """The ramp-up EMA's averaging profile, from EDM's formula in NumPy (not our code), has
    the EDM2 width asked for: std of the weights over time / training length."""
    ratio = ema.rampup_ratio_for_sigma_rel(sigma_rel)
    steps, batch = 20_000, 128
    t = np.arange(steps, dtype=np.float64)
    beta = 0.5 ** (batch / np.maximum(ratio * t * batch, 1e-8))  # half-life cap never reached
    # Weight of the params after update i in the final EMA: (1 − β_i) ∏_{j>i} β_j.
    with np.errstate(divide="ignore"):  # β_0 = 0: the first update is copied, log 0 unused
        later = np.concatenate([np.cumsum(np.log(beta)[::-1])[::-1][1:], [0.0]])
    weights = (1.0 - beta) * np.exp(later)
    assert weights.sum() == pytest.approx(1.0, abs=1e-6)
    time = (t + 1) / steps
    mean = (weights * time).sum()
    measured = np.sqrt((weights * (time - mean) ** 2).sum())
    assert measured == pytest.approx(sigma_rel, rel=0.03)
    if sigma_rel == 0.063:
        assert ratio == pytest.approx(0.05, rel=0.01)  # EDM's own setting
