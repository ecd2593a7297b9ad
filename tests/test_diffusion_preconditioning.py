"""Preconditioners, σ distributions, loss weights and the denoising loss vs closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import optimize, stats

from jaxml.diffusion import ideal, losses, pfgmpp, preconditioning

SIGMAS = np.array([0.002, 0.05, 0.3, 1.0, 7.0, 80.0])


def _vp_sigma_np(t, beta_d=19.9, beta_min=0.1):
    return np.sqrt(np.exp(0.5 * beta_d * t**2 + beta_min * t) - 1.0)


def _vp_t_np(sigma):
    # Invert σ(t) numerically: an independent check of the closed-form inverse.
    return np.array(
        [optimize.brentq(lambda t, s=s: _vp_sigma_np(t) - s, 1e-12, 2.0, xtol=1e-14) for s in sigma]
    )


def _formulas(name, s):
    """Karras et al. 2022, Table 1 (σ_d = 0.5, M = 1000), in NumPy float64."""
    if name == "edm":
        sd = 0.5
        return dict(
            c_skip=sd**2 / (s**2 + sd**2),
            c_out=s * sd / np.sqrt(s**2 + sd**2),
            c_in=1 / np.sqrt(s**2 + sd**2),
            c_noise=np.log(s) / 4,
            loss_weight=(s**2 + sd**2) / (s * sd) ** 2,
        )
    if name == "vp":
        return dict(
            c_skip=np.ones_like(s),
            c_out=-s,
            c_in=1 / np.sqrt(s**2 + 1),
            c_noise=999 * _vp_t_np(s),
            loss_weight=1 / s**2,
        )
    if name == "ve":
        return dict(
            c_skip=np.ones_like(s),
            c_out=s,
            c_in=np.ones_like(s),
            c_noise=np.log(s / 2),
            loss_weight=1 / s**2,
        )
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_coefficients_and_loss_weight_match_table(name):
    precond = preconditioning.get_preconditioner(name)
    s = jnp.asarray(SIGMAS, jnp.float32)
    for coef, expected in _formulas(name, SIGMAS).items():
        got = np.asarray(getattr(precond, coef)(s), np.float64)
        np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-6, err_msg=f"{name}.{coef}")
    # c_noise can be inverted (used by the ideal network).
    np.testing.assert_allclose(precond.sigma_from_c_noise(precond.c_noise(s)), SIGMAS, rtol=1e-4)


def test_edm_weight_makes_effective_target_unit_weight():
    # EDM chooses λ(σ) = 1/c_out(σ)²: the network's own regression has weight 1.
    p = preconditioning.EDMPrecond()
    s = jnp.asarray(SIGMAS, jnp.float32)
    np.testing.assert_allclose(p.loss_weight(s) * p.c_out(s) ** 2, 1.0, rtol=1e-5)


def test_sigma_distributions():
    key = jax.random.PRNGKey(0)
    n = 20000
    edm = np.asarray(preconditioning.EDMPrecond().sample_sigma(key, (n,)), np.float64)
    assert stats.kstest(np.log(edm), stats.norm(-1.2, 1.2).cdf).pvalue > 0.01
    ve = np.asarray(preconditioning.VEPrecond().sample_sigma(key, (n,)), np.float64)
    assert (
        stats.kstest(np.log(ve), stats.uniform(np.log(0.02), np.log(100 / 0.02)).cdf).pvalue > 0.01
    )
    vp = np.asarray(preconditioning.VPPrecond().sample_sigma(key, (n,)), np.float64)
    t = _vp_t_np(vp[:2000])
    assert stats.kstest(t, stats.uniform(1e-5, 1 - 1e-5).cdf).pvalue > 0.01


def test_unknown_preconditioner_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown preconditioner 'vq'"):
        preconditioning.get_preconditioner("vq")
    with pytest.raises(ValueError, match="Unknown preconditioner"):
        losses.make_denoising_loss(lambda *a: 0.0, precond="edn")


def _toy_gmm(dim=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, dim)).astype(np.float32), np.array([0.2, 0.5, 0.1, 0.3], np.float32)


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_ideal_network_round_trips_through_preconditioning(name):
    means, stds = _toy_gmm()
    exact = ideal.gmm_denoiser(means, stds)
    precond = preconditioning.get_preconditioner(name)
    F = ideal.ideal_network(exact, precond)
    x = jax.random.normal(jax.random.PRNGKey(1), (len(SIGMAS), 3)) * (
        1 + jnp.asarray(SIGMAS)[:, None]
    )
    sigma = jnp.asarray(SIGMAS, jnp.float32)
    got = preconditioning.precondition(precond, F, x, sigma)
    want = exact(x, sigma)
    scale = 1.0 + np.abs(
        np.asarray(x)
    )  # float32 cancellation in c_skip·x + c_out·F scales with |x|
    assert np.all(np.abs(np.asarray(got) - np.asarray(want)) < 2e-5 * scale)
    # Through make_denoiser, the sampler-facing wrapper.
    denoise = preconditioning.make_denoiser(lambda p, xi, c, l: F(xi, c, l), None, precond)
    np.testing.assert_allclose(denoise(x, sigma), got, rtol=1e-6, atol=1e-6)


def test_weighted_denoising_error_matches_formula():
    precond = preconditioning.EDMPrecond()
    rng = np.random.default_rng(1)
    y = rng.normal(size=(5, 2, 3)).astype(np.float32) * 0.5
    noise = rng.normal(size=(5, 2, 3)).astype(np.float32)
    sigma = np.array([0.01, 0.2, 1.0, 5.0, 40.0], np.float32)
    noise = noise * sigma[:, None, None]

    def net(x_in, c_noise, labels):  # a simple network with a closed-form output
        return 0.7 * x_in + c_noise[:, None, None] + labels[:, None, None]

    labels = np.arange(5, dtype=np.float32)
    weighted, sq = losses.weighted_denoising_error(
        precond, net, jnp.asarray(y), jnp.asarray(noise), jnp.asarray(sigma), jnp.asarray(labels)
    )
    s = sigma.astype(np.float64)[:, None, None]
    f = _formulas("edm", s)
    x = y + noise
    D = f["c_skip"] * x + f["c_out"] * (0.7 * f["c_in"] * x + f["c_noise"] + labels[:, None, None])
    want_sq = ((D - y) ** 2).reshape(5, -1).mean(1)
    np.testing.assert_allclose(sq, want_sq, rtol=1e-4)
    np.testing.assert_allclose(weighted, f["loss_weight"][:, 0, 0] * want_sq, rtol=1e-4)


@pytest.mark.parametrize("name", ["edm", "vp", "ve"])
def test_loss_of_zero_network_is_one(name):
    # With F = 0 and data of variance σ_d² = 1/4 per element, E[λ‖D - y‖²] = 1 per
    # element at every σ for all three (EDM: λ c_out² = 1 and the target has unit
    # variance; VP/VE: D = x, so the error is the noise and λ = 1/σ²).
    loss_fn = losses.make_denoising_loss(lambda p, x, c, l: jnp.zeros_like(x), precond=name)
    signs = jax.random.rademacher(jax.random.PRNGKey(2), (4096, 16)).astype(jnp.float32)
    loss, metrics = jax.jit(loss_fn)(None, {"image": 0.5 * signs}, jax.random.PRNGKey(3))
    assert abs(float(loss) - 1.0) < 0.05
    assert set(metrics) >= {"loss", "mse"}


def test_loss_is_pure_jittable_and_differentiable():
    def net_apply(params, x, c_noise, labels):
        return params["w"] * x + params["b"] * c_noise[:, None]

    params = {"w": jnp.float32(0.3), "b": jnp.float32(-0.1)}
    batch = {"image": jax.random.normal(jax.random.PRNGKey(0), (8, 4)), "label": jnp.arange(8)}
    loss_fn = losses.make_denoising_loss(net_apply, "edm")
    value_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    key = jax.random.PRNGKey(5)
    (l1, metrics), grads = value_and_grad(params, batch, key)
    (l2, _), _ = value_and_grad(params, batch, key)
    assert float(l1) == float(l2) == float(metrics["loss"])
    assert all(np.isfinite(np.asarray(g)) for g in jax.tree_util.tree_leaves(grads))


def _stf_numpy(x, sigma, reference, D=None):
    """Stable Target Field written out from its formula (Xu et al. 2023), float64:
    Σ_j w_j y_j, w_j ∝ exp(-‖x - y_j‖²/(2σ²)) (Gaussian) or (‖x - y_j‖² + σ²D)^{-(N+D)/2}."""
    xf = np.asarray(x, np.float64).reshape(len(x), -1)
    yf = np.asarray(reference, np.float64).reshape(len(reference), -1)
    N = xf.shape[1]
    s = np.broadcast_to(np.asarray(sigma, np.float64), (len(x),))[:, None]
    sq = ((xf[:, None, :] - yf[None, :, :]) ** 2).sum(-1)
    logits = -sq / (2 * s**2) if D is None else -(N + D) / 2 * np.log(sq + s**2 * D)
    w = np.exp(logits - logits.max(1, keepdims=True))
    return ((w / w.sum(1, keepdims=True)) @ yf).reshape(np.shape(x))


def _stf_jnp(reference, D=None):
    """The same formula as a denoiser, in jnp with direct differences (pfgmpp uses the
    ‖x‖² - 2x·y + ‖y‖² expansion and its own kernel): the test's ideal network."""
    yf = jnp.asarray(reference).reshape(len(reference), -1)

    def denoise(x, sigma):
        xf = x.reshape(len(x), -1)
        s = jnp.broadcast_to(sigma, (len(x),))[:, None]
        sq = jnp.sum((xf[:, None, :] - yf[None, :, :]) ** 2, -1)
        N = xf.shape[1]
        logits = -sq / (2 * s**2) if D is None else -(N + D) / 2 * jnp.log(sq + s**2 * D)
        return (jax.nn.softmax(logits, axis=1) @ yf).reshape(x.shape)

    return denoise


@pytest.mark.parametrize("D", [None, 64, 2])
def test_stable_target_field_matches_its_formula(D):
    images = np.random.default_rng(7).normal(size=(16, 2, 4)).astype(np.float32)
    sigma = np.array([0.05, 0.3, 1.0, 3.0] * 4, np.float32)
    noisy = images + sigma[:, None, None] * np.random.default_rng(9).normal(size=images.shape)
    noisy = noisy.astype(np.float32)
    got = np.asarray(pfgmpp.stf_target(jnp.asarray(noisy), jnp.asarray(sigma), images, D))
    want = _stf_numpy(noisy, sigma, images, D)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)
    # Not a degenerate case: at σ = 1 and 3 the target is neither y_i nor the batch mean.
    mid = sigma >= 1.0
    assert np.min(np.abs(want - images).reshape(16, -1).max(1)[mid]) > 0.05
    assert np.min(np.abs(want - images.mean(0)).reshape(16, -1).max(1)[mid]) > 0.05


def test_stable_target_field_limits():
    # Closed forms: σ → 0 gives the example's own image, σ → ∞ the batch mean (both kernels).
    images = np.random.default_rng(3).normal(size=(8, 5)).astype(np.float32)
    noisy = images + 1e-3 * np.random.default_rng(4).normal(size=images.shape).astype(np.float32)
    for D in (None, 16):
        small = pfgmpp.stf_target(jnp.asarray(noisy), 0.01, images, D)
        np.testing.assert_allclose(small, images, atol=1e-5)
        large = pfgmpp.stf_target(jnp.asarray(noisy), 1e4, images, D)
        np.testing.assert_allclose(large, np.broadcast_to(images.mean(0), images.shape), atol=1e-4)


@pytest.mark.parametrize("D", [None, 64])
def test_stf_loss_vanishes_for_the_formula_ideal_network(D):
    # The network that outputs the formula's posterior over the batch (written in this test)
    # has zero STF loss through make_denoising_loss (its own σ and noise draws), while its
    # plain loss does not vanish.
    images = jax.random.normal(jax.random.PRNGKey(7), (16, 8))
    F = ideal.ideal_network(_stf_jnp(images, D), "edm")
    net_apply = lambda p, x, c, l: F(x, c, l)
    batch = {"image": images}
    stf = losses.make_denoising_loss(net_apply, "edm", D, stf=True)
    plain = losses.make_denoising_loss(net_apply, "edm", D)
    stf_loss, plain_loss = jax.jit(lambda k: (stf(None, batch, k)[0], plain(None, batch, k)[0]))(
        jax.random.PRNGKey(8)
    )
    assert float(plain_loss) > 1e-3
    assert float(stf_loss) < 1e-5 * float(plain_loss)
