"""PFGM++ kernel, prior and exact posterior mean vs closed forms (scipy, NumPy float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special, stats

from jaxml.diffusion import ideal, pfgmpp

SHAPE = (3, 4, 4)  # one example: N = 48
N = int(np.prod(SHAPE))
DRAWS = 20000

# D enters traced, so one compiled program (the χ² sampler is slow to compile) serves every
# D, for both the kernel and the prior.
_draw = jax.jit(
    lambda key, y, sigma, D: (
        pfgmpp.perturb(key, y, sigma, D),
        pfgmpp.prior(jax.random.fold_in(key, 1), y.shape, sigma, D),
    )
)
_perturb = lambda key, y, sigma, D: _draw(key, y, sigma, D)[0]
_perturb_gaussian = jax.jit(lambda key, y, sigma: pfgmpp.perturb(key, y, sigma, None))


def _sq_norm_ratio(x, sigma):
    flat = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    return np.sum(flat**2, axis=1) / (flat.shape[1] * sigma**2)


@pytest.mark.parametrize("D", [8, 128, 2048])
def test_noise_norm_follows_f_distribution(D):
    sigma = 0.7
    y = jnp.full((DRAWS,) + SHAPE, 3.0, jnp.float32)
    x = _perturb(jax.random.PRNGKey(D), y, sigma, float(D))
    ratio = _sq_norm_ratio(x - y, sigma)
    assert stats.kstest(ratio, stats.f(N, D).cdf).pvalue > 0.01
    # One coordinate of a multivariate Student-t is Student-t with D dof.
    coord = np.asarray(x - y)[:, 1, 2, 3] / sigma
    assert stats.kstest(coord, stats.t(D).cdf).pvalue > 0.01


def test_large_D_approaches_gaussian():
    sigma = 1.3
    y = jnp.zeros((DRAWS,) + SHAPE, jnp.float32)
    for D in (None, 1e7):
        n = (
            _perturb_gaussian(jax.random.PRNGKey(1), y, sigma)
            if D is None
            else (_perturb(jax.random.PRNGKey(1), y, sigma, D))
        )
        # ‖n‖²/σ² ~ χ²_N, and each coordinate ~ N(0, σ²).
        assert stats.kstest(_sq_norm_ratio(n, sigma) * N, stats.chi2(N).cdf).pvalue > 0.01
        assert stats.kstest(np.asarray(n)[:, 0, 0, 0] / sigma, stats.norm.cdf).pvalue > 0.01
    # At D = 2048 the F(N, D) law is already close to χ²_N/N: the KS distance is small.
    f_vs_chi2 = stats.kstest(
        stats.f(N, 2048).rvs(size=DRAWS, random_state=0), stats.chi2(N, scale=1 / N).cdf
    ).statistic
    assert f_vs_chi2 < 0.05


@pytest.mark.parametrize("D", [8, 128, 2048])
def test_prior_at_sigma_max(D):
    x = _draw(jax.random.PRNGKey(10 + D), jnp.zeros((DRAWS,) + SHAPE, jnp.float32), 80.0, float(D))[
        1
    ]
    assert stats.kstest(_sq_norm_ratio(x, 80.0), stats.f(N, D).cdf).pvalue > 0.01


def test_per_example_sigma_broadcasts():
    sigma = jnp.array([0.1, 1.0, 10.0, 100.0])
    y = jnp.zeros((4, 2000))
    n = np.asarray(pfgmpp.perturb(jax.random.PRNGKey(3), y, sigma, None))
    np.testing.assert_allclose(n.std(axis=1), np.asarray(sigma), rtol=0.06)


def test_bad_D_is_a_clear_error():
    with pytest.raises(ValueError, match="augmentation dimension D"):
        pfgmpp.prior(jax.random.PRNGKey(0), (2, 3), 80.0, D=0)


def _posterior_mean_np(x, sigma, data, D):
    """Direct float64 reference: w_i ∝ p_σ(x | y_i) from explicit differences."""
    x = np.asarray(x, np.float64).reshape(x.shape[0], -1)
    y = np.asarray(data, np.float64).reshape(data.shape[0], -1)
    sq = np.sum((x[:, None, :] - y[None]) ** 2, axis=-1)
    s = np.broadcast_to(np.asarray(sigma, np.float64), (x.shape[0],))[:, None]
    if D is None:
        logw = -sq / (2 * s**2)
    else:
        logw = -(x.shape[1] + D) / 2 * np.log(sq + s**2 * D)
    w = np.exp(logw - special.logsumexp(logw, axis=1, keepdims=True))
    return w @ y


@pytest.mark.parametrize("D", [None, 8, 128, 2048])
def test_posterior_mean_matches_direct_reference(D):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 2, 3)).astype(np.float32)
    sigma = np.array([0.02, 0.1, 0.4, 1.5, 10.0, 80.0], np.float32)
    x = (data[rng.integers(0, 20, 6)] + sigma[:, None, None] * rng.normal(size=(6, 2, 3))).astype(
        np.float32
    )
    got = np.asarray(
        pfgmpp.posterior_mean(jnp.asarray(x), jnp.asarray(sigma), jnp.asarray(data), D)
    )
    want = _posterior_mean_np(x, sigma, data, D).reshape(x.shape)
    np.testing.assert_allclose(got, want, atol=2e-4 * (1 + np.abs(want).max()))


def test_posterior_mean_is_stable_at_tiny_sigma_and_huge_N_plus_D():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(10, 512)).astype(np.float32)
    x = data[[3, 7]] + 1e-4 * rng.normal(size=(2, 512)).astype(np.float32)
    for D in (None, 128, 10**6):
        got = np.asarray(pfgmpp.posterior_mean(jnp.asarray(x), 1e-3, jnp.asarray(data), D))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, data[[3, 7]], atol=1e-5)


def test_posterior_mean_large_D_tends_to_gaussian():
    rng = np.random.default_rng(2)
    data = jnp.asarray(rng.normal(size=(30, 5)), jnp.float32)
    x = jnp.asarray(rng.normal(size=(8, 5)) * 1.5, jnp.float32)
    gauss = pfgmpp.posterior_mean(x, 0.8, data, None)
    np.testing.assert_allclose(pfgmpp.posterior_mean(x, 0.8, data, 10**7), gauss, atol=2e-3)
    # And the finite-dataset Gaussian denoiser is the s → 0 Gaussian mixture.
    np.testing.assert_allclose(ideal.gmm_denoiser(data, 0.0)(x, 0.8), gauss, atol=1e-5)


def test_gmm_denoiser_is_tweedie_of_mixture_density():
    # D(x; σ) = x + σ² ∇ log p_σ(x), with log p_σ written independently in NumPy-style JAX.
    rng = np.random.default_rng(3)
    means = rng.normal(size=(5, 3)).astype(np.float32)
    stds = np.array([0.1, 0.3, 0.5, 0.2, 1.0], np.float32)
    weights = np.array([1, 2, 3, 4, 5], np.float32)
    x = jnp.asarray(rng.normal(size=(7, 3)) * 2, jnp.float32)
    sigma = jnp.asarray([0.01, 0.05, 0.2, 0.7, 2.0, 9.0, 60.0], jnp.float32)

    def log_p(xi, si):
        var = stds**2 + si**2
        sq = jnp.sum((xi[None, :] - means) ** 2, axis=-1)
        return jax.nn.logsumexp(
            jnp.log(weights / weights.sum()) - sq / (2 * var) - 1.5 * jnp.log(var)
        )

    score = jax.jit(jax.vmap(jax.grad(log_p)))(x, sigma)
    want = x + sigma[:, None] ** 2 * score
    got = jax.jit(ideal.gmm_denoiser(means, stds, weights))(x, sigma)
    assert np.all(np.abs(np.asarray(got) - np.asarray(want)) < 1e-4 * (1 + np.abs(np.asarray(x))))


def test_restart_jump_large_D_is_gaussian_increment():
    x = jnp.zeros((500, 16))
    t_min, t_max = 0.3, 1.1
    out = np.asarray(
        jax.jit(pfgmpp.restart_jump, static_argnums=4)(
            jax.random.PRNGKey(0), x, t_min, t_max, 20000
        )
    )
    std = np.sqrt(t_max**2 - t_min**2)
    assert stats.kstest(out.ravel() / std, stats.norm.cdf).pvalue > 0.01
    np.testing.assert_allclose(out.std(), std, rtol=0.02)


@pytest.mark.parametrize("D", [1, 7, 128, 2048, 10_000])
def test_chi_square_sum_and_gamma_paths_follow_chi2(D):
    """A static integer D takes the loop-free sum (D > MAX_SUM_DEGREES: the gamma path)."""
    g = np.asarray(jax.jit(lambda key: pfgmpp.chi_square(key, D, (20000,)))(jax.random.key(D)))
    assert g.dtype == np.float32 and np.all(np.isfinite(g)) and np.all(g > 0)
    assert stats.kstest(g, stats.chi2(D).cdf).pvalue > 0.01


def test_static_D_noise_follows_f_distribution():
    """The train step passes D as a Python number: the kernel it draws is still F(N, D)."""
    D, sigma = 128, 0.7
    y = jnp.zeros((DRAWS,) + SHAPE, jnp.float32)
    n = jax.jit(lambda key: pfgmpp.sample_noise(key, y.shape, sigma, D))(jax.random.key(5))
    assert stats.kstest(_sq_norm_ratio(n, sigma), stats.f(N, D).cdf).pvalue > 0.01
