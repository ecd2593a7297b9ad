"""Samplers on exact denoisers: convergence, NFE, Restart = Heun at K = 0, sharding."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxml.diffusion import edm_sigmas, ideal, pfgmpp, samplers

# 8 Gaussian modes on a ring of radius 2 (std 0.1): the 2-D benchmark problem.
ANGLES = np.arange(8) / 8 * 2 * np.pi
RING = np.stack([2 * np.cos(ANGLES), 2 * np.sin(ANGLES)], axis=1).astype(np.float32)
RING_STD = 0.1
GMM = ideal.gmm_denoiser(RING, RING_STD)
RESTART_IV = ((3, 2, 0.5, 2.0), (4, 1, 0.05, 0.3))
CHURN = dict(S_churn=30.0, S_min=0.01, S_max=1.0)

# Every denoiser call of the shared programs below appends to CALLS, so the NFE test
# counts real executions of programs that the other tests also check for values.
CALLS = []


def _counted_gmm(x, sigma):
    jax.debug.callback(lambda: CALLS.append(1))
    return GMM(x, sigma)


def _latents(n, seed=0, dim=2):
    return pfgmpp.prior(jax.random.PRNGKey(seed), (n, dim), 80.0)


@functools.cache
def _program(name, num_steps, **options):
    """One compiled program per configuration, shared by the tests: (latents, key) -> (x, nfe)."""
    sigmas = edm_sigmas(num_steps)
    fn = getattr(samplers, name)
    return jax.jit(lambda lat, key: fn(_counted_gmm, lat, sigmas, key=key, **options))


def _run(name, num_steps, lat, key=None, **options):
    samples, info = _program(name, num_steps, **options)(lat, key)
    return np.asarray(samples), int(info["nfe"])


@functools.cache
def _heun_125_run():
    """Latents and Heun (NFE 249) samples shared by the convergence and noise-floor tests."""
    lat = _latents(16000, seed=2)
    return lat, _run("heun", 125, lat)[0]


# The configurations the value tests use; the NFE test re-runs them and counts.
MAIN_LAT, MAIN_KEY, N_MAIN = _latents(64, seed=4), jax.random.PRNGKey(4), 12
RESTART_OPTIONS = dict(restart_intervals=RESTART_IV, restart_gamma=0.05, S_noise=0.0, **CHURN)


def _sliced_w2_np(a, b, num_proj=128, seed=0):
    """Sliced Wasserstein-2 between equal-size point sets (NumPy reference)."""
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(a.shape[1], num_proj))
    d /= np.linalg.norm(d, axis=0)
    pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def test_edm_sigmas_formula():
    got = np.asarray(edm_sigmas(18))
    i = np.arange(18)
    want = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    assert got.shape == (19,) and got[-1] == 0.0
    np.testing.assert_allclose(got[:-1], want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(edm_sigmas(1, sigma_max=5.0)), [5.0, 0.0])
    with pytest.raises(ValueError, match="num_steps"):
        edm_sigmas(0)


def test_nfe_counts_match_published_formulas():
    N = N_MAIN
    cases = [
        ("euler", 16, _heun_125_run()[0], None, {}, 16),
        ("heun", N, MAIN_LAT, None, {}, 2 * N - 1),
        ("stochastic", N, MAIN_LAT, MAIN_KEY, CHURN, 2 * N - 1),
        # Restart: 2N_main - 1 + Σ K_i·2(N_R,i - 1).
        (
            "restart",
            N,
            MAIN_LAT,
            MAIN_KEY,
            RESTART_OPTIONS,
            2 * N - 1 + 2 * 2 * (3 - 1) + 1 * 2 * (4 - 1),
        ),
    ]
    for name, num_steps, lat, key, options, expected in cases:
        jax.effects_barrier()
        CALLS.clear()
        _, nfe = _run(name, num_steps, lat, key, **options)
        jax.effects_barrier()
        assert len(CALLS) == expected == nfe, name


def test_error_decreases_with_nfe():
    # Same latents, so the deterministic samplers can be compared path by path to a
    # fine-grid solution of the same ODE: Euler (order 1) and Heun (order 2) converge.
    lat, reference = _heun_125_run()
    for name, grid in [("euler", (4, 8, 16)), ("heun", (4, 8, 16))]:
        errors = [np.sqrt(np.mean((_run(name, n, lat)[0] - reference) ** 2)) for n in grid]
        assert all(e1 > 1.3 * e2 for e1, e2 in zip(errors, errors[1:])), (name, errors)


def test_heun_250_nfe_reaches_metric_noise_floor():
    # E[SW2] over 8 independent replicates: sampler vs fresh truth, and truth vs truth.
    reps, n = 8, 2000
    _, samples = _heun_125_run()  # NFE 249
    truth = np.asarray(ideal.gmm_sample(jax.random.PRNGKey(3), 2 * reps * n, RING, RING_STD))
    sampler_sw2 = np.mean(
        [
            _sliced_w2_np(samples[r * n : (r + 1) * n], truth[r * n : (r + 1) * n], seed=r)
            for r in range(reps)
        ]
    )
    floor = np.mean(
        [
            _sliced_w2_np(
                truth[r * n : (r + 1) * n], truth[(reps + r) * n : (reps + r + 1) * n], seed=r
            )
            for r in range(reps)
        ]
    )
    assert sampler_sw2 < 1.5 * floor, (sampler_sw2, floor)


def _gmm_denoiser_np(x, sigma):
    """The ring's exact denoiser in float64 NumPy, straight from the mixture formula."""
    var = RING_STD**2 + sigma**2
    logw = -np.sum((x[:, None, :] - RING[None]) ** 2, -1) / (2 * var)
    w = np.exp(logw - logw.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    return (RING_STD**2 * x + sigma**2 * (w @ RING)) / var


def _official_edm_restart_np(x, t_steps, S_churn, S_min, S_max, restart_list, restart_gamma, rho=7):
    """NumPy transcription of the official EDM / Restart sampler loops (Xu et al.), noise-free.

    With S_noise = 0 every churn and restart jump adds nothing, so the result is
    deterministic and tests the schedule logic: churn gating, t̂, Heun corrections,
    snapping t_min to the main grid and the inner restart schedules.
    """
    num_steps = len(t_steps) - 1
    restart = {int(np.argmin(np.abs(t_steps - v[2]))): v for v in restart_list}
    for i in range(num_steps):
        t_cur, t_next = t_steps[i], t_steps[i + 1]
        gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
        t_hat = t_cur + gamma * t_cur
        d_cur = (x - _gmm_denoiser_np(x, t_hat)) / t_hat
        x_next = x + (t_next - t_hat) * d_cur
        if i < num_steps - 1:
            d_prime = (x_next - _gmm_denoiser_np(x_next, t_next)) / t_next
            x_next = x + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
        x = x_next
        if i + 1 in restart:
            N_R, K, _, t_max = restart[i + 1]
            t_min = t_steps[i + 1]
            j = np.arange(N_R)
            new_t = (
                t_max ** (1 / rho) + j / (N_R - 1) * (t_min ** (1 / rho) - t_max ** (1 / rho))
            ) ** rho
            for _ in range(K):
                for t_cur, t_next in zip(new_t[:-1], new_t[1:]):
                    gamma = restart_gamma if S_min <= t_cur <= S_max else 0
                    t_hat = t_cur + gamma * t_cur
                    d_cur = (x - _gmm_denoiser_np(x, t_hat)) / t_hat
                    x_next = x + (t_next - t_hat) * d_cur
                    d_prime = (x_next - _gmm_denoiser_np(x_next, t_next)) / t_next
                    x = x + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x


def test_samplers_match_official_loops_in_numpy():
    sig = edm_sigmas(N_MAIN)
    x0, t_steps = np.asarray(MAIN_LAT, np.float64), np.asarray(sig, np.float64)
    no_restart = dict(restart_list=[], restart_gamma=0)
    with_restart = dict(restart_list=RESTART_IV, restart_gamma=0.05, **CHURN)
    traced = jax.jit(lambda l, s, k: samplers.restart(GMM, l, s, key=k, **RESTART_OPTIONS)[0])
    runs = {
        "heun": (
            _run("heun", N_MAIN, MAIN_LAT)[0],
            dict(S_churn=0, S_min=0, S_max=np.inf, **no_restart),
        ),
        "stochastic": (
            _run("stochastic", N_MAIN, MAIN_LAT, MAIN_KEY, S_noise=0.0, **CHURN)[0],
            dict(**no_restart, **CHURN),
        ),
        "restart": (
            _run("restart", N_MAIN, MAIN_LAT, MAIN_KEY, **RESTART_OPTIONS)[0],
            with_restart,
        ),
        # A traced schedule: t_min is snapped inside the compiled program.
        "restart, traced sigmas": (traced(MAIN_LAT, sig, MAIN_KEY), with_restart),
    }
    for name, (got, reference_options) in runs.items():
        want = _official_edm_restart_np(x0, t_steps, **reference_options)
        np.testing.assert_allclose(np.asarray(got), want, atol=2e-4, err_msg=name)


def test_restart_jump_keeps_the_marginals():
    # Data N(0, 1) in 1-D: every p_σ = N(0, 1 + σ²) is known. A wrong jump scale
    # (e.g. t_max instead of sqrt(t_max² - t_min²)) would inflate the final std by ~18%.
    single = ideal.gmm_denoiser(np.zeros((1, 1), np.float32), 1.0)
    lat = pfgmpp.prior(jax.random.PRNGKey(15), (20000, 1), 80.0)
    out, _ = jax.jit(
        lambda l, k: samplers.restart(
            single, l, edm_sigmas(24), key=k, restart_intervals=[(8, 3, 2.0, 3.0)]
        )
    )(lat, jax.random.PRNGKey(16))
    out = np.asarray(out)[:, 0]
    assert abs(out.std() - 1.0) < 0.03 and abs(out.mean()) < 0.03


def test_restart_without_repeats_is_heun_bit_for_bit():
    no_repeats = ((3, 0, 0.5, 2.0), (5, 0, 0.05, 0.3))
    heun_out, _ = _run("heun", N_MAIN, MAIN_LAT)
    restart_out, nfe = _run("restart", N_MAIN, MAIN_LAT, MAIN_KEY, restart_intervals=no_repeats)
    np.testing.assert_array_equal(restart_out, heun_out)
    assert nfe == 2 * N_MAIN - 1
    # With churn in the main pass, K = 0 is likewise the EDM stochastic sampler.
    sto, _ = _run("stochastic", N_MAIN, MAIN_LAT, MAIN_KEY, **CHURN)
    rst, _ = _run("restart", N_MAIN, MAIN_LAT, MAIN_KEY, restart_intervals=no_repeats, **CHURN)
    np.testing.assert_array_equal(rst, sto)


@pytest.mark.parametrize("D", [None, 128])
def test_finite_dataset_samples_land_on_data(D):
    data = jax.random.uniform(jax.random.PRNGKey(6), (32, 16), minval=-1.0, maxval=1.0)
    denoise = ideal.finite_dataset_denoiser(data, D)
    # The prior at σ_max = 80 drawn in NumPy: σ·ε·sqrt(D/χ²_D), or σ·ε for D = ∞
    # (pfgmpp.prior itself is checked against the F(N, D) law in test_pfgmpp.py).
    rng = np.random.default_rng(7)
    scale = 1.0 if D is None else np.sqrt(D / rng.chisquare(D, size=(256, 1)))
    lat = jnp.asarray(80.0 * rng.normal(size=(256, 16)) * scale, jnp.float32)
    out, _ = jax.jit(lambda l: samplers.heun(denoise, l, edm_sigmas(32)))(lat)
    dist = np.min(
        np.linalg.norm(np.asarray(out)[:, None] - np.asarray(data)[None], axis=-1), axis=1
    )
    assert np.mean(dist < 1e-3) >= 0.99
    if D is None:
        return
    # PFGM++ restart (its own forward jump) keeps the samples on the data as well.
    out, _ = jax.jit(
        lambda l, k: samplers.restart(
            denoise, l, edm_sigmas(16), key=k, D=D, restart_intervals=[(3, 2, 0.1, 1.0)]
        )
    )(lat, jax.random.PRNGKey(8))
    dist = np.min(
        np.linalg.norm(np.asarray(out)[:, None] - np.asarray(data)[None], axis=-1), axis=1
    )
    assert np.mean(dist < 1e-3) >= 0.99


def test_sampling_is_the_same_on_one_and_eight_devices():
    devices = jax.devices()
    assert len(devices) == 8, "conftest.py should provide 8 virtual CPU devices"
    mesh = Mesh(np.array(devices), ("batch",))
    lat, key = _latents(64, seed=11), jax.random.PRNGKey(11)
    sig = edm_sigmas(8)
    # One run that exercises every code path: churn, restart jumps and inner churn, and
    # the particle-guidance term (the only one that mixes examples across the batch).
    run = jax.jit(
        lambda l, k: samplers.restart(
            GMM,
            l,
            sig,
            key=k,
            restart_intervals=RESTART_IV,
            restart_gamma=0.05,
            particle_guidance=0.05,
            **CHURN,
        )[0]
    )
    one = run(jax.device_put(lat, devices[0]), key)
    out = run(jax.device_put(lat, NamedSharding(mesh, P("batch"))), key)
    assert len(one.sharding.device_set) == 1 and len(out.sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(out), np.asarray(one), rtol=1e-5, atol=1e-5)


def test_particle_repulsion_matches_closed_form():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(7, 2, 3)).astype(np.float32)
    flat = x.reshape(7, -1).astype(np.float64)
    diff = flat[:, None] - flat[None]
    sq = np.sum(diff**2, -1)
    h = np.median(sq[np.triu_indices(7, 1)]) / np.log(6)
    want = np.sum((2 / h) * np.exp(-sq / h)[..., None] * diff, axis=1).reshape(x.shape)
    np.testing.assert_allclose(
        samplers.particle_repulsion(jnp.asarray(x)), want, rtol=1e-4, atol=1e-5
    )


def test_particle_guidance_spreads_the_batch():
    single_mode = ideal.gmm_denoiser(np.zeros((1, 2), np.float32), 0.3)
    lat = _latents(64, seed=13)
    sig = edm_sigmas(16)

    def spread(strength):
        out = np.asarray(
            jax.jit(lambda l: samplers.heun(single_mode, l, sig, particle_guidance=strength)[0])(
                lat
            )
        )
        return np.mean(np.linalg.norm(out[:, None] - out[None], axis=-1))

    assert spread(0.1) > 1.1 * spread(0.0)


def test_bad_options_are_clear_errors():
    lat, key, sig = _latents(4), jax.random.PRNGKey(0), edm_sigmas(10)
    with pytest.raises(ValueError, match="t_min < t_max"):
        samplers.restart(GMM, lat, sig, key=key, restart_intervals=[(3, 1, 1.0, 0.5)])
    with pytest.raises(ValueError, match="N_R"):
        samplers.restart(GMM, lat, sig, key=key, restart_intervals=[(1, 1, 0.1, 0.5)])
    with pytest.raises(ValueError, match="expected a tuple"):
        samplers.restart(GMM, lat, sig, key=key, restart_intervals=[(3, 1, 0.1)])
    with pytest.raises(ValueError, match="snaps to"):  # nearest level is the final 0
        samplers.restart(GMM, lat, sig, key=key, restart_intervals=[(3, 1, 1e-6, 0.5)])
    with pytest.raises(ValueError, match="not below t_max"):
        samplers.restart(GMM, lat, sig, key=key, restart_intervals=[(3, 1, 1.2, 1.3)])
    with pytest.raises(ValueError, match="key"):
        samplers.restart(GMM, lat, sig, restart_intervals=[(3, 1, 0.1, 0.5)])
    with pytest.raises(ValueError, match="key"):
        samplers.stochastic(GMM, lat, sig, S_churn=10.0)
    with pytest.raises(ValueError, match="Unknown sampler"):
        samplers.get_sampler("dpm")
    with pytest.raises(ValueError, match="at least 3"):
        samplers.heun(GMM, lat[:2], sig, particle_guidance=0.1)
