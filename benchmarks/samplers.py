"""Sampler quality vs NFE with exact denoisers: no network, no training, CPU only.

    python benchmarks/samplers.py            # full run (a few minutes on 2 cores)
    python benchmarks/samplers.py --quick    # smaller, for a smoke check

Writes benchmarks/results/samplers_cpu.json, samplers_*.png and
samplers_table.md.

Problems (sampled from the EDM prior N(0, 80² I), or the PFGM++ prior):
  ring2d   8 isotropic Gaussians (std 0.1) on a circle of radius 2, in 2-D.
  gmm64    16 isotropic Gaussians in 64-D: means ~ N(0, I), stds in [0.1, 0.4],
           weights ∝ 1..16 (shuffled).
  pfgmpp   a finite dataset (256 draws of gmm64), exact PFGM++ posterior mean
           E[y | x, r = σ√D] for D ∈ {64, 128, 2048, ∞}; latents from the PFGM++
           prior at σ_max = 80; restart uses the PFGM++ forward jump.

Denoisers:
  exact      the closed-form E[y | x; σ] (ideal.gmm_denoiser /
             ideal.finite_dataset_denoiser). Sampler error is then the
             solver's alone and every sampler converges to the truth.
  imperfect  exact + a fixed, smooth, σ-dependent error field
                 e(x, σ) = δ · s_d · b(σ) · W₂ sin(W₁ x / s_d + φ) / √m,
                 b(σ) = exp(-ln²(σ / σ_e) / 2),
             with s_d the data's RMS per coordinate, m = 32 random features,
             W₁ (m, d) ~ N(0, 1/d), W₂ (d, m) ~ N(0, 1), φ ~ U(0, 2π), all fixed
             by a seed, and δ = 0.2. The error vanishes at both ends of the σ
             range, like a trained network's, and peaks at σ_e:
               imperfect-mid   σ_e = s_d     (where a network's error is largest),
               imperfect-high  σ_e = 5 s_d   (above the restart intervals).
             This is the regime of Restart's claim: a deterministic ODE carries
             the error made at high σ to the end, while Restart's forward noise
             contracts it; inside a restart interval, though, the error is
             re-applied on every repeat.

Metric: sliced Wasserstein-2 distance (fixed random projections: 64 in 2-D,
256 in 64-D) between
the samples and fresh true samples (for pfgmpp: resamples of the dataset; also
the fraction of samples within 1% of the median nearest-neighbour distance of a
data point, "on data"), as
the mean over R disjoint chunks. The metric's noise floor is the same SW2
between two independent true sample sets. All samplers share the latents,
the keys and the true chunks, so the table's verdicts use paired per-chunk
differences (|t| > 3 over the R chunks); "tie" means not resolved.

Samplers at matched NFE: euler (N = NFE), heun and stochastic (N = (NFE+1)/2;
EDM churn S_churn = 30, S_min = 0.01, S_max = 1, S_noise = 1), and two Restart
families (S_noise = 1, no inner churn), the main pass taking about 80% of the
budget up to 18 steps (35 NFE, as in the paper) and K restarts the rest:
  restart       (N_R = 3, t_min = 0.06, t_max = 0.30)  the paper's CIFAR-10 interval
  restart-wide  (N_R = 4, t_min = 0.30, t_max = 2.0)   up to σ ≈ s_d, where modes split
PFGM++ runs heun (from NFE 5) and restart (paper interval, PFGM++ forward jump;
from NFE 19) with the exact and imperfect-mid denoisers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxml.diffusion import edm_sigmas, ideal, pfgmpp, samplers

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
NUM_PROJECTIONS = 256
CHURN = dict(S_churn=30.0, S_min=0.01, S_max=1.0, S_noise=1.0)
RESTART_FAMILIES = {
    "restart": dict(N_R=3, t_min=0.06, t_max=0.30),
    "restart-wide": dict(N_R=4, t_min=0.30, t_max=2.0),
}
SAMPLER_NAMES = ["euler", "heun", "stochastic", "restart", "restart-wide"]

_T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - _T0:7.1f}s] {msg}", flush=True)


# ----------------------------------------------------------------------------
# Problems and denoisers.


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


# ----------------------------------------------------------------------------
# Metric.


def projections(dim: int, seed: int = 123) -> np.ndarray:
    """(num, dim) fixed random unit directions; 64 suffice to cover a circle in 2-D."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(min(NUM_PROJECTIONS, 32 * dim), dim))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def sliced_w2(a: np.ndarray, b: np.ndarray, proj: np.ndarray) -> float:
    """SW2 between equal-size sets: RMS over projections of the sorted-quantile distance."""
    pa = np.sort(proj @ a.T, axis=1)  # (projections, samples): sort along contiguous rows
    pb = np.sort(proj @ b.T, axis=1)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def chunked_sw2(samples, truth_chunks, proj):
    r = len(truth_chunks)
    chunks = np.split(np.asarray(samples, np.float64), r)
    return np.array([sliced_w2(c, t, proj) for c, t in zip(chunks, truth_chunks)])


# ----------------------------------------------------------------------------
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
    fam = RESTART_FAMILIES[name]
    n_main, K = restart_config(nfe, **fam)
    sig = edm_sigmas(n_main)
    # The interval snaps to the main grid; if its t_min would snap to t_max's level
    # or beyond on a very coarse grid, the call raises (and the point is skipped).
    iv = [(fam["N_R"], K, fam["t_min"], fam["t_max"])]
    fn = lambda f, x, k: samplers.restart(f, x, sig, key=k, restart_intervals=iv, S_noise=1.0, D=D)
    return fn, 2 * n_main - 1 + K * 2 * (fam["N_R"] - 1), f"N_main={n_main}, K={K}"


# ----------------------------------------------------------------------------
# Runs.


def run_gmm_problem(name, gmm, nfes, n_chunk, reps, results, seed=0):
    dim = gmm["means"].shape[1]
    s_d = data_rms(gmm)
    proj = projections(dim)
    exact = ideal.gmm_denoiser(gmm["means"], gmm["stds"], gmm["weights"])
    make_denoiser = with_error(exact, error_field(dim, s_d), s_d)
    n = n_chunk * reps
    key = jax.random.PRNGKey(seed)
    k_lat, k_truth, k_floor, k_sampler = jax.random.split(key, 4)
    latents = pfgmpp.prior(k_lat, (n, dim), SIGMA_MAX)
    truth = np.split(
        np.asarray(
            ideal.gmm_sample(k_truth, n, gmm["means"], gmm["stds"], gmm["weights"]), np.float64
        ),
        reps,
    )
    other = np.split(
        np.asarray(
            ideal.gmm_sample(k_floor, n, gmm["means"], gmm["stds"], gmm["weights"]), np.float64
        ),
        reps,
    )
    floor = np.array([sliced_w2(a, b, proj) for a, b in zip(truth, other)])
    out = dict(
        dim=dim,
        data_rms=s_d,
        n_per_chunk=n_chunk,
        chunks=reps,
        floor=dict(mean=floor.mean(), std=floor.std(ddof=1), per_chunk=floor.tolist()),
        **{variant: {} for variant in VARIANTS},
    )
    log(
        f"{name}: d={dim}, s_d={s_d:.3f}, {reps}x{n_chunk} samples, "
        f"SW2 noise floor {floor.mean():.4f} ± {floor.std(ddof=1):.4f}"
    )
    for sampler in SAMPLER_NAMES:
        for nfe in nfes:
            try:
                fn, expected, desc = sampler_call(sampler, nfe)
            except ValueError as e:
                log(f"{name} {sampler} NFE {nfe}: skipped ({e})")
                continue
            run = jax.jit(
                lambda x, k, delta, center, fn=fn, make=make_denoiser: fn(make(delta, center), x, k)
            )
            for variant, (delta, center) in VARIANTS.items():
                t = time.time()
                samples, info = run(latents, k_sampler, jnp.float32(delta), jnp.float32(center))
                samples = np.asarray(samples)
                assert int(info["nfe"]) == expected
                if not np.all(np.isfinite(samples)):
                    raise FloatingPointError(f"{name} {sampler} NFE {nfe}: non-finite samples")
                sw = chunked_sw2(samples, truth, proj)
                out[variant].setdefault(sampler, []).append(
                    dict(
                        nfe=int(info["nfe"]),
                        config=desc,
                        sw2=sw.mean(),
                        sw2_std=sw.std(ddof=1),
                        per_chunk=sw.tolist(),
                        seconds=time.time() - t,
                    )
                )
                log(
                    f"{name} {variant:14s} {sampler:12s} NFE {int(info['nfe']):3d} ({desc}): "
                    f"SW2 {sw.mean():.4f} ({sw.mean() / floor.mean():.2f}x floor)  "
                    f"{time.time() - t:.1f}s"
                )
    results[name] = out


def run_pfgmpp_problem(nfes, n_chunk, reps, results, num_data=256, seed=0):
    gmm = gmm64()
    dim = gmm["means"].shape[1]
    s_d = data_rms(gmm)
    proj = projections(dim)
    key = jax.random.PRNGKey(seed + 7)
    k_data, k_lat, k_truth, k_floor, k_sampler = jax.random.split(key, 5)
    data = ideal.gmm_sample(k_data, num_data, gmm["means"], gmm["stds"], gmm["weights"])
    data_np = np.asarray(data, np.float64)
    n = n_chunk * reps
    rng = np.random.default_rng(seed)
    truth = np.split(data_np[rng.integers(0, num_data, n)], reps)
    other = np.split(data_np[rng.integers(0, num_data, n)], reps)
    floor = np.array([sliced_w2(a, b, proj) for a, b in zip(truth, other)])
    field = error_field(dim, s_d)
    nn = np.sqrt(
        np.min(
            np.sum((data_np[:, None] - data_np[None]) ** 2, -1)
            + np.diag(np.full(num_data, np.inf)),
            axis=1,
        )
    )
    on_data_radius = 0.01 * float(np.median(nn))
    out = dict(
        dim=dim,
        num_data=num_data,
        n_per_chunk=n_chunk,
        chunks=reps,
        on_data_radius=on_data_radius,
        floor=dict(mean=floor.mean(), std=floor.std(ddof=1), per_chunk=floor.tolist()),
        by_D={},
    )
    log(
        f"pfgmpp: {num_data} points in {dim}-D, {reps}x{n_chunk} samples, "
        f"SW2 noise floor {floor.mean():.4f} ± {floor.std(ddof=1):.4f}"
    )
    for D in (64, 128, 2048, None):
        label = "inf" if D is None else str(D)
        latents = pfgmpp.prior(k_lat, (n, dim), SIGMA_MAX, D)
        exact = ideal.finite_dataset_denoiser(data, D)
        make_denoiser = with_error(exact, field, s_d)
        per_D = out["by_D"][label] = {variant: {} for variant in PFGMPP_VARIANTS}
        for sampler in ("heun", "restart"):
            # Restart needs a main grid worth restarting from: below 19 NFE it has < 8 steps.
            for nfe in [n for n in nfes if sampler == "heun" or n >= 19]:
                fn, expected, desc = sampler_call(sampler, nfe, D=D)
                run = jax.jit(
                    lambda x, k, delta, center, fn=fn, make=make_denoiser: fn(
                        make(delta, center), x, k
                    )
                )
                for variant in PFGMPP_VARIANTS:
                    delta, center = VARIANTS[variant]
                    t = time.time()
                    samples, info = run(latents, k_sampler, jnp.float32(delta), jnp.float32(center))
                    samples = np.asarray(samples, np.float64)
                    assert int(info["nfe"]) == expected
                    sw = chunked_sw2(samples, truth, proj)
                    dist = np.sqrt(
                        np.maximum(
                            np.sum(samples**2, 1)[:, None]
                            - 2 * samples @ data_np.T
                            + np.sum(data_np**2, 1)[None],
                            0,
                        )
                    ).min(1)
                    on_data = float(np.mean(dist < on_data_radius))
                    per_D[variant].setdefault(sampler, []).append(
                        dict(
                            nfe=int(info["nfe"]),
                            config=desc,
                            sw2=sw.mean(),
                            sw2_std=sw.std(ddof=1),
                            per_chunk=sw.tolist(),
                            on_data=on_data,
                            seconds=time.time() - t,
                        )
                    )
                    log(
                        f"pfgmpp D={label:4s} {variant:14s} {sampler:8s} "
                        f"NFE {int(info['nfe']):3d}: "
                        f"SW2 {sw.mean():.4f} ({sw.mean() / floor.mean():.2f}x floor), "
                        f"on data {on_data:.3f}  {time.time() - t:.1f}s"
                    )
    results["pfgmpp"] = out


# ----------------------------------------------------------------------------
# Report: plots and table.


def _nfe_axis(ax, nfes):
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    ax.set_xscale("log")
    ax.set_xticks(sorted(nfes))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("NFE (denoiser calls per sample)")


STYLE = {
    "euler": ("tab:gray", "o"),
    "heun": ("tab:blue", "s"),
    "stochastic": ("tab:green", "^"),
    "restart": ("tab:red", "D"),
    "restart-wide": ("tab:purple", "v"),
}


def plot_gmm(name, res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(VARIANTS), figsize=(16, 4.4), sharey=True)
    floor = res["floor"]
    for ax, variant in zip(axes, VARIANTS):
        for sampler, rows in res[variant].items():
            color, marker = STYLE[sampler]
            nfe = [r["nfe"] for r in rows]
            ax.errorbar(
                nfe,
                [r["sw2"] for r in rows],
                yerr=[r["sw2_std"] / np.sqrt(res["chunks"]) for r in rows],
                color=color,
                marker=marker,
                label=sampler,
                capsize=2,
            )
        ax.axhspan(floor["mean"] - floor["std"], floor["mean"] + floor["std"], color="k", alpha=0.1)
        ax.axhline(
            floor["mean"], color="k", ls="--", lw=1, label="noise floor (true vs true) ± 1 sd"
        )
        _nfe_axis(ax, {r["nfe"] for rows in res[variant].values() for r in rows})
        ax.set_yscale("log")
        ax.set_title(f"{name}: {variant} denoiser")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("sliced W2 to true samples (mean ± SE over chunks)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pfgmpp(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    colors = {"64": "tab:orange", "128": "tab:red", "2048": "tab:purple", "inf": "tab:blue"}
    nfes = set()
    for label, per_D in res["by_D"].items():
        name = f"D={_label(label)}"
        for sampler, marker, ls in (("heun", "o", "-"), ("restart", "x", "--")):
            rows = per_D["exact"][sampler]
            nfes |= {r["nfe"] for r in rows}
            axes[0].plot(
                [r["nfe"] for r in rows],
                [r["sw2"] for r in rows],
                ls=ls,
                marker=marker,
                color=colors[label],
                label=f"{name} {sampler}",
            )
        for variant, ls in (("exact", "-"), ("imperfect-mid", ":")):
            rows = per_D[variant]["heun"]
            axes[1].plot(
                [r["nfe"] for r in rows],
                [r["on_data"] for r in rows],
                ls=ls,
                marker="o",
                color=colors[label],
                label=f"{name} heun, {variant}",
            )
    axes[0].axhline(res["floor"]["mean"], color="k", ls="--", lw=1, label="noise floor")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("sliced W2 to the dataset")
    axes[0].set_title("PFGM++ on a 256-point dataset (64-D), exact denoiser")
    axes[1].set_ylabel("fraction of samples on a data point")
    axes[1].set_title("PFGM++: samples that land on the data")
    for ax in axes:
        _nfe_axis(ax, nfes)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_ring_scatter(gmm, path, nfe=35, n=2000):
    """What the samples look like at low NFE with the imperfect-high denoiser."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exact = ideal.gmm_denoiser(gmm["means"], gmm["stds"], gmm["weights"])
    s_d = data_rms(gmm)
    make_denoiser = with_error(exact, error_field(2, s_d), s_d)
    delta, center = VARIANTS["imperfect-high"]
    latents = pfgmpp.prior(jax.random.PRNGKey(5), (n, 2), SIGMA_MAX)
    truth = np.asarray(ideal.gmm_sample(jax.random.PRNGKey(6), n, gmm["means"], gmm["stds"]))
    names = ["heun", "stochastic", "restart-wide"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(14, 4.0), sharex=True, sharey=True)
    axes[0].scatter(truth[:, 0], truth[:, 1], s=1, color="k")
    axes[0].set_title("true samples")
    for ax, name in zip(axes[1:], names):
        fn, nfe_used, desc = sampler_call(name, nfe)
        x, _ = jax.jit(lambda x, k, fn=fn: fn(make_denoiser(delta, center), x, k))(
            latents, jax.random.PRNGKey(7)
        )
        x = np.asarray(x)
        ax.scatter(x[:, 0], x[:, 1], s=1, color=STYLE[name][0])
        ax.set_title(f"{name}, NFE {nfe_used}, imperfect-high")
    for ax in axes:
        ax.set_aspect("equal")
        ax.set_xlim(-3, 3)
        ax.set_ylim(-3, 3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(a_rows, b_rows, t_threshold=3.0):
    """Per matched NFE: 'better'/'worse'/'tie' of a vs b from paired per-chunk differences.

    Paired, because both saw the same latents and true chunks; |t| > 3 (about
    2% two-sided with 8 chunks) keeps the many comparisons from crying wolf.
    """
    by_nfe = {r["nfe"]: r for r in b_rows}
    verdicts = {}
    for r in a_rows:
        if r["nfe"] not in by_nfe:
            continue
        diff = np.asarray(r["per_chunk"]) - np.asarray(by_nfe[r["nfe"]]["per_chunk"])
        t = diff.mean() / max(diff.std(ddof=1) / np.sqrt(len(diff)), 1e-12)
        verdicts[r["nfe"]] = "better" if t < -t_threshold else "worse" if t > t_threshold else "tie"
    return verdicts


def _label(D_label):
    return "∞" if D_label == "inf" else D_label


def summary_table(results, nfes=(35, 199)) -> list:
    """The short table: SW2 / noise floor per problem, denoiser and NFE; ▲/▼ marks a
    restart cell better/worse than both heun and stochastic (paired, |t| > 3)."""
    lines = [
        "| problem · denoiser · NFE | " + " | ".join(SAMPLER_NAMES) + " |",
        "|---|" + "---|" * len(SAMPLER_NAMES),
    ]
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        res = results[name]
        floor = res["floor"]["mean"]
        for variant in VARIANTS:
            for nfe in nfes:
                row = {
                    s: next((r for r in res[variant].get(s, []) if r["nfe"] == nfe), None)
                    for s in SAMPLER_NAMES
                }
                if not any(row.values()):
                    continue
                best = min(r["sw2"] for r in row.values() if r)
                cells = []
                for sampler, r in row.items():
                    if r is None:
                        cells.append("—")
                        continue
                    text = f"{r['sw2'] / floor:.2f}"
                    if sampler.startswith("restart"):
                        marks = {verdict([r], res[variant][o])[nfe] for o in ("heun", "stochastic")}
                        text += " ▲" if marks == {"better"} else " ▼" if "worse" in marks else ""
                    cells.append(f"**{text}**" if r["sw2"] == best else text)
                lines.append(f"| {name} · {variant} · {nfe} | " + " | ".join(cells) + " |")
    return lines


def verdict_summary(results) -> list:
    """Lists every matched-NFE point where a Restart family is significantly better than
    both Heun and stochastic, or worse than either (paired, |t| > 3)."""
    better, worse = [], {}
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        for variant in VARIANTS:
            res = results[name][variant]
            for fam in ("restart", "restart-wide"):
                vs = {o: verdict(res.get(fam, []), res.get(o, [])) for o in ("heun", "stochastic")}
                for nfe in sorted(vs["heun"]):
                    where = f"{name} · {variant} · {fam} · {nfe}"
                    if vs["heun"][nfe] == "better" and vs["stochastic"].get(nfe) == "better":
                        better.append(where)
                    if any(vs[o].get(nfe) == "worse" for o in vs):
                        worse.setdefault(f"{name} · {variant}", {}).setdefault(fam, []).append(
                            str(nfe)
                        )
    total = sum(
        len(rows)
        for name in ("ring2d", "gmm64")
        if name in results
        for variant in VARIANTS
        for fam, rows in results[name][variant].items()
        if fam.startswith("restart")
    )
    return [
        f"Restart significantly better than both Heun and stochastic at equal NFE: "
        f"{len(better)} of {total} points" + (": " + "; ".join(better) if better else "") + ".",
        "",
        f"Significantly worse than at least one of them: "
        f"{sum(len(n) for fams in worse.values() for n in fams.values())} of {total}"
        + (
            " (at NFE): "
            + "; ".join(
                f"{where}: " + ", ".join(f"{fam} {'/'.join(n)}" for fam, n in fams.items())
                for where, fams in worse.items()
            )
            if worse
            else ""
        )
        + ".",
        "",
    ]


def table_markdown(results) -> str:
    lines = [
        "Sampler error with exact denoisers (no network), CPU: sliced W2 to fresh true "
        "samples divided by the metric's noise floor (SW2 between two independent true "
        "sample sets), so 1.00 is as good as it gets. Bold: best at that NFE. ▲ / ▼: "
        "Restart significantly better than both Heun and EDM-stochastic / worse than one "
        "of them (paired over chunks, |t| > 3). `python benchmarks/samplers.py`.",
        "",
    ]
    lines += summary_table(results)
    lines.append("")
    lines += verdict_summary(results)
    if "pfgmpp" in results:
        res = results["pfgmpp"]
        floor = res["floor"]["mean"]
        nfes = [r["nfe"] for r in next(iter(res["by_D"].values()))["exact"]["heun"]]
        lines.append(
            "PFGM++ on a 256-point dataset in 64-D, exact denoiser: SW2 / floor "
            "(fraction of samples on a data point):"
        )
        lines.append("")
        lines.append("| D · sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
        lines.append("|---|" + "---|" * len(nfes))
        for label, per_D in res["by_D"].items():
            for sampler in ("heun", "restart"):
                cells = {r["nfe"]: r for r in per_D["exact"][sampler]}
                lines.append(
                    f"| {_label(label)} · {sampler} | "
                    + " | ".join(
                        f"{cells[n]['sw2'] / floor:.2f} ({cells[n]['on_data']:.1%})"
                        if n in cells
                        else "—"
                        for n in nfes
                    )
                    + " |"
                )
        lines.append("")

    lines += [
        "## Full results",
        "",
        "Absolute SW2 (mean over chunks). Floors: "
        + ", ".join(
            f"{name} {results[name]['floor']['mean']:.4f} ± {results[name]['floor']['std']:.4f}"
            for name in ("ring2d", "gmm64", "pfgmpp")
            if name in results
        )
        + ".",
        "",
    ]
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        res = results[name]
        for variant in VARIANTS:
            nfes = sorted({r["nfe"] for rows in res[variant].values() for r in rows})
            lines.append(f"**{name}, {variant} denoiser**")
            lines.append("")
            lines.append("| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
            lines.append("|---|" + "---|" * len(nfes))
            for sampler, rows in res[variant].items():
                cells = {r["nfe"]: r for r in rows}
                lines.append(
                    f"| {sampler} | "
                    + " | ".join(
                        f"{cells[n]['sw2']:.4f} ({cells[n]['config']})" if n in cells else "—"
                        for n in nfes
                    )
                    + " |"
                )
            lines.append("")
    if "pfgmpp" in results:
        res = results["pfgmpp"]
        for variant in PFGMPP_VARIANTS:
            nfes = [r["nfe"] for r in next(iter(res["by_D"].values()))[variant]["heun"]]
            lines.append(f"**PFGM++, {variant} denoiser: heun / restart, SW2 (fraction on data)**")
            lines.append("")
            lines.append("| D | " + " | ".join(f"NFE {n}" for n in nfes) + " |")
            lines.append("|---|" + "---|" * len(nfes))
            for label, per_D in res["by_D"].items():
                h = {r["nfe"]: r for r in per_D[variant]["heun"]}
                rs = {r["nfe"]: r for r in per_D[variant]["restart"]}
                fmt = lambda r: f"{r['sw2']:.4f} ({r['on_data']:.3f})"
                lines.append(
                    f"| {_label(label)} | "
                    + " | ".join(fmt(h[n]) + (" / " + fmt(rs[n]) if n in rs else "") for n in nfes)
                    + " |"
                )
            lines.append("")
    lines.append(
        "**Restart vs Heun / stochastic at equal NFE** (paired over chunks, |t| > 3; "
        "'tie' = not resolved):"
    )
    lines.append("")
    for name in ("ring2d", "gmm64"):
        if name not in results:
            continue
        for variant in VARIANTS:
            res = results[name][variant]
            for fam in ("restart", "restart-wide"):
                for other in ("heun", "stochastic"):
                    v = verdict(res.get(fam, []), res.get(other, []))
                    summary = ", ".join(f"{n}: {s}" for n, s in sorted(v.items()))
                    lines.append(f"- {name} / {variant}: {fam} vs {other} — {summary}")
    if "pfgmpp" in results:
        for variant in PFGMPP_VARIANTS:
            for label, per_D in results["pfgmpp"]["by_D"].items():
                v = verdict(per_D[variant]["restart"], per_D[variant]["heun"])
                summary = ", ".join(f"{n}: {s}" for n, s in sorted(v.items()))
                lines.append(f"- pfgmpp D={_label(label)} / {variant}: restart vs heun — {summary}")
    lines.append("")
    return "\n".join(lines)


def _to_builtin(obj):
    if isinstance(obj, dict):
        return {k: _to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_builtin(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer NFE points and samples")
    parser.add_argument(
        "--out-dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    )
    parser.add_argument(
        "--only",
        choices=["ring2d", "gmm64", "pfgmpp"],
        action="append",
        help="run only these problems (repeatable)",
    )
    parser.add_argument(
        "--replot", metavar="JSON", help="only redraw the PNGs and the table from an earlier JSON"
    )
    args = parser.parse_args(argv)
    if args.replot:
        with open(args.replot) as f:
            payload = json.load(f)
        write_report(
            payload["results"], args.out_dir, "_quick" if payload["config"]["quick"] else ""
        )
        return
    problems = args.only or ["ring2d", "gmm64", "pfgmpp"]
    if args.quick:
        nfes, pfg_nfes, reps = [19, 63], [5, 19], 4
        sizes = dict(ring2d=2000, gmm64=1000, pfgmpp=250)
    else:
        nfes, pfg_nfes, reps = [19, 35, 63, 199], [5, 9, 19, 63], 8
        sizes = dict(ring2d=2500, gmm64=1000, pfgmpp=250)
    os.makedirs(args.out_dir, exist_ok=True)
    log(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} CPUs; "
        f"problems {problems}; NFE {nfes}"
    )
    results = {}
    if "ring2d" in problems:
        run_gmm_problem("ring2d", ring2d(), nfes, sizes["ring2d"], reps, results)
    if "gmm64" in problems:
        run_gmm_problem("gmm64", gmm64(), nfes, sizes["gmm64"], reps, results)
    if "pfgmpp" in problems:
        run_pfgmpp_problem(pfg_nfes, sizes["pfgmpp"], reps, results)

    suffix = "_quick" if args.quick else ""
    results = _to_builtin(results)
    payload = dict(
        config=dict(
            quick=args.quick,
            nfes=nfes,
            pfgmpp_nfes=pfg_nfes,
            chunks=reps,
            sizes=sizes,
            sigma_max=SIGMA_MAX,
            variants=VARIANTS,
            num_projections=NUM_PROJECTIONS,
            churn=CHURN,
            restart_families=RESTART_FAMILIES,
        ),
        machine=dict(
            jax=jax.__version__,
            platform=jax.devices()[0].platform,
            cpu_count=os.cpu_count(),
            python=sys.version.split()[0],
            node=platform.machine(),
        ),
        total_seconds=time.time() - _T0,
        results=results,
    )
    with open(os.path.join(args.out_dir, f"samplers_cpu{suffix}.json"), "w") as f:
        json.dump(_to_builtin(payload), f, indent=1)
    print(write_report(results, args.out_dir, suffix))
    log(f"wrote {args.out_dir}/samplers_cpu{suffix}.json, PNGs and samplers_table{suffix}.md")


def write_report(results, out_dir, suffix) -> str:
    """Plots and the markdown table; returns the table."""
    for name in ("ring2d", "gmm64"):
        if name in results:
            plot_gmm(name, results[name], os.path.join(out_dir, f"samplers_{name}{suffix}.png"))
    if "ring2d" in results:
        plot_ring_scatter(ring2d(), os.path.join(out_dir, f"samplers_ring2d_scatter{suffix}.png"))
    if "pfgmpp" in results:
        plot_pfgmpp(results["pfgmpp"], os.path.join(out_dir, f"samplers_pfgmpp{suffix}.png"))
    table = table_markdown(results)
    with open(os.path.join(out_dir, f"samplers_table{suffix}.md"), "w") as f:
        f.write(table)
    return table


if __name__ == "__main__":
    main()
