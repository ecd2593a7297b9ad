"""benchmarks/samplers.py, what is compared: the problems (Gaussian mixtures, a finite
dataset), the exact and imperfect denoisers, and each sampler's settings at a matched NFE.
See benchmarks/samplers.py for the full description."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxml.diffusion import edm_sigmas, samplers

SIGMA_MAX = 80.0
ERROR_DELTA = 0.2
# Denoiser variants: (δ, σ_e / s_d). δ and σ_e are traced: one program serves all three.
VARIANTS = {
    "exact": (0.0, 1.0),
    "imperfect-mid": (ERROR_DELTA, 1.0),
    "imperfect-high": (ERROR_DELTA, 5.0),
}
PFGMPP_VARIANTS = ("exact", "imperfect-mid")
NUM_FEATURES = 32
CHURN = dict(S_churn=30.0, S_min=0.01, S_max=1.0, S_noise=1.0)
RESTART_FAMILIES = {
    "restart": dict(N_R=3, t_min=0.06, t_max=0.30),
    "restart-wide": dict(N_R=4, t_min=0.30, t_max=2.0),
}
SAMPLER_NAMES = ["euler", "heun", "stochastic", "restart", "restart-wide"]


def ring2d():
    angles = np.arange(8) / 8 * 2 * np.pi
    means = np.stack([2 * np.cos(angles), 2 * np.sin(angles)], axis=1)
    return dict(
        means=means.astype(np.float32),
        stds=np.full(8, 0.1, np.float32),
        weights=np.full(8, 1 / 8, np.float32),
    )


def gmm64(seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.permutation(np.arange(1, 17)).astype(np.float32)
    return dict(
        means=rng.normal(size=(16, 64)).astype(np.float32),
        stds=rng.uniform(0.1, 0.4, 16).astype(np.float32),
        weights=weights / weights.sum(),
    )


def data_rms(gmm) -> float:
    """s_d: the RMS of one coordinate of the data distribution."""
    d = gmm["means"].shape[1]
    second = np.sum(gmm["weights"] * (np.sum(gmm["means"] ** 2, 1) / d + gmm["stds"] ** 2))
    return float(np.sqrt(second))


def error_field(dim: int, s_d: float, seed: int = 1):
    """e(x, σ; σ_e) = s_d · b(σ) · W₂ sin(W₁ x / s_d + φ)/√m, to be scaled by δ (see docstring)."""
    rng = np.random.default_rng(seed)
    W1 = jnp.asarray(rng.normal(size=(NUM_FEATURES, dim)) / np.sqrt(dim), jnp.float32)
    W2 = jnp.asarray(rng.normal(size=(dim, NUM_FEATURES)), jnp.float32)
    phase = jnp.asarray(rng.uniform(0, 2 * np.pi, NUM_FEATURES), jnp.float32)

    def field(x, sigma, center):
        bump = jnp.exp(-0.5 * jnp.log(sigma / center) ** 2)[:, None]
        feats = jnp.sin(x @ W1.T / s_d + phase)
        return s_d * bump * (feats @ W2.T) / np.sqrt(NUM_FEATURES)

    return field


def with_error(exact, field, s_d):
    """denoise(x, σ; δ, σ_e/s_d) = exact + δ·field; the arguments are traced, so the
    exact (δ = 0) and imperfect runs share one compiled program."""

    def make(delta, center_factor):
        return lambda x, sigma: exact(x, sigma) + delta * field(x, sigma, center_factor * s_d)

    return make


# Sampler configurations at matched NFE.


def restart_config(nfe: int, N_R: int, t_min: float, t_max: float):
    """(N_main, K) with 2 N_main - 1 + K·2(N_R - 1) == nfe; main pass ≈ 80% of nfe, ≤ 18 steps."""
    per_restart = 2 * (N_R - 1)
    target = int(np.clip(round(0.4 * (nfe + 1)), 3, 18))
    for n_main in sorted(range(3, 19), key=lambda n: abs(n - target)):
        rest = nfe - (2 * n_main - 1)
        if rest >= 0 and rest % per_restart == 0:
            return n_main, rest // per_restart
    raise ValueError(f"No restart configuration reaches NFE {nfe} exactly.")


def sampler_call(name: str, nfe: int, D=None):
    """(function of (denoise_fn, latents, key), expected NFE, description)."""
    if name == "euler":
        sig = edm_sigmas(nfe)
        return (lambda f, x, k: samplers.euler(f, x, sig)), nfe, f"N={nfe}"
    if name in ("heun", "stochastic"):
        n = (nfe + 1) // 2
        sig = edm_sigmas(n)
        if name == "heun":
            return (lambda f, x, k: samplers.heun(f, x, sig)), 2 * n - 1, f"N={n}"
        return (lambda f, x, k: samplers.stochastic(f, x, sig, key=k, **CHURN)), 2 * n - 1, f"N={n}"
    n_main, K = restart_config(nfe, **RESTART_FAMILIES[name])
    return restart_call(name, n_main, K, D=D)


def restart_call(family: str, n_main: int, K: int, D=None):
    """Restart of `family` on the main grid edm_sigmas(n_main) with K repeats of its interval:
    (function of (denoise_fn, latents, key), expected NFE, description)."""
    fam = RESTART_FAMILIES[family]
    sig = edm_sigmas(n_main)
    # The interval snaps to the main grid; if its t_min would snap to t_max's level
    # or beyond on a very coarse grid, the call raises (and the point is skipped).
    iv = [(fam["N_R"], K, fam["t_min"], fam["t_max"])]
    fn = lambda f, x, k: samplers.restart(f, x, sig, key=k, restart_intervals=iv, S_noise=1.0, D=D)
    return fn, 2 * n_main - 1 + K * 2 * (fam["N_R"] - 1), f"N_main={n_main}, K={K}"


# The cut main grid (benchmarks/samplers.py, run_cut_grid): a coarse main pass whose
# discretization error Restart's forward noise can contract, K restarts on top, against
# heun and stochastic on a finer grid of the same NFE.
CUT_MAIN_STEPS = (6, 10)
CUT_RESTARTS = (0, 1, 2, 4, 8)
CUT_FAMILIES = ("restart", "restart-wide")
CUT_VARIANTS = {
    "exact": VARIANTS["exact"],
    "imperfect-high": VARIANTS["imperfect-high"],  # σ_e = 5 s_d
    "imperfect-2sd": (ERROR_DELTA, 2.0),  # σ_e = 2 s_d, still above both intervals
}


def cut_grid_configs(families, main_steps, restarts):
    """[(family, N_main, K, NFE)] and the sorted NFEs at which heun/stochastic must run.

    Every restart NFE 2 N_main - 1 + K·2(N_R - 1) is odd, so heun and stochastic with
    N = (NFE + 1) / 2 steps match it exactly."""
    configs = [
        (fam, n, K, 2 * n - 1 + K * 2 * (RESTART_FAMILIES[fam]["N_R"] - 1))
        for fam in families
        for n in main_steps
        for K in restarts
        if K > 0 or fam == families[0]  # K = 0 is Heun on the cut grid: once is enough
    ]
    return configs, sorted({nfe for *_, nfe in configs})


def matched_steps(nfe: int) -> int:
    """Heun/stochastic steps N with 2N - 1 == nfe (nfe odd)."""
    if nfe % 2 == 0:
        raise ValueError(f"NFE {nfe} is even: heun cannot match it exactly.")
    return (nfe + 1) // 2
