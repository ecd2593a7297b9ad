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

The code: samplers_problems.py (problems, denoisers, sampler settings),
samplers_metric.py (SW2, on-data fraction, paired verdicts), samplers_report.py
(plots, table); this file runs them.
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
from samplers_metric import (
    NUM_PROJECTIONS,
    chunked_sw2,
    on_data_fraction,
    on_data_radius,
    projections,
    sliced_w2,
)
from samplers_problems import (
    CHURN,
    PFGMPP_VARIANTS,
    RESTART_FAMILIES,
    SAMPLER_NAMES,
    SIGMA_MAX,
    VARIANTS,
    data_rms,
    error_field,
    gmm64,
    ring2d,
    sampler_call,
    with_error,
)
from samplers_report import write_report

from jaxml.diffusion import ideal, pfgmpp

_T0 = time.time()


def log(msg: str) -> None:
    print(f"[{time.time() - _T0:7.1f}s] {msg}", flush=True)


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
    radius = on_data_radius(data_np)
    out = dict(
        dim=dim,
        num_data=num_data,
        n_per_chunk=n_chunk,
        chunks=reps,
        on_data_radius=radius,
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
                    on_data = on_data_fraction(samples, data_np, radius)
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


if __name__ == "__main__":
    main()
