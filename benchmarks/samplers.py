"""Sampler quality vs NFE with exact denoisers: no network, no training, CPU only.

    python benchmarks/samplers.py                 # full run (about 14 minutes on 2 cores)
    python benchmarks/samplers.py --quick         # smaller, for a smoke check
    python benchmarks/samplers.py --only cutgrid  # one section, merged into the JSON

Writes benchmarks/results/samplers_cpu.json, samplers_*.png (samplers_cutgrid.png
for the cut main grid) and samplers_table.md.

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

Cut main grid (section "cutgrid", ring2d and gmm64). In the table above the main
pass has up to 18 steps: with exact denoisers every sampler is at the metric's
floor by NFE 35, and error inside a restart interval is re-applied on every
repeat, so those problems cannot show what Restart is claimed to do (Xu et al.
2023: at equal NFE it beats the ODE and the SDE, because its forward noise
contracts the error accumulated earlier while its ODE steps keep discretization
error small). This section isolates that claim. The main pass is cut to
N_main ∈ {6, 10} EDM steps, where Heun leaves visible discretization error for
Restart's noise to contract; K ∈ {0, 1, 2, 4, 8} restarts of each family's
interval follow (K = 0 is Heun on the cut grid), NFE = 2 N_main - 1 + K·2(N_R - 1),
always odd, so heun and stochastic run on the finer grid N = (NFE + 1) / 2 of
exactly the same NFE. Denoisers: exact (discretization error only) and the error
bump above both intervals, σ_e = 5 s_d ("imperfect-high") and σ_e = 2 s_d
("imperfect-2sd"), δ = 0.2: error that a deterministic ODE carries to the end and
Restart's noise could contract. 16 chunks (4 with --quick) for paired verdicts of
each restart point against heun and stochastic at its NFE. Results go under
results["cutgrid"], the table's last section and samplers_cutgrid.png.

`--only SECTION` runs the chosen sections and keeps the others from an existing
samplers_cpu.json in --out-dir; the table and PNGs are redrawn from the merged
results. `--replot JSON` redraws from any earlier JSON, with or without "cutgrid".

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
    CUT_FAMILIES,
    CUT_MAIN_STEPS,
    CUT_RESTARTS,
    CUT_VARIANTS,
    PFGMPP_VARIANTS,
    RESTART_FAMILIES,
    SAMPLER_NAMES,
    SIGMA_MAX,
    VARIANTS,
    cut_grid_configs,
    data_rms,
    error_field,
    gmm64,
    matched_steps,
    restart_call,
    ring2d,
    sampler_call,
    with_error,
)
from samplers_report import write_report

from jaxml.diffusion import ideal, pfgmpp

_T0 = time.time()
SECTIONS = ["ring2d", "gmm64", "pfgmpp", "cutgrid"]


def log(msg: str) -> None:
    print(f"[{time.time() - _T0:7.1f}s] {msg}", flush=True)


def _gmm_setup(gmm, n_chunk, reps, seed=0):
    """Shared latents, sampler key, true chunks and noise floor for a Gaussian mixture."""
    dim = gmm["means"].shape[1]
    s_d = data_rms(gmm)
    proj = projections(dim)
    exact = ideal.gmm_denoiser(gmm["means"], gmm["stds"], gmm["weights"])
    make_denoiser = with_error(exact, error_field(dim, s_d), s_d)
    n = n_chunk * reps
    key = jax.random.PRNGKey(seed)
    k_lat, k_truth, k_floor, k_sampler = jax.random.split(key, 4)
    latents = pfgmpp.prior(k_lat, (n, dim), SIGMA_MAX)
    sample = lambda k: np.split(
        np.asarray(ideal.gmm_sample(k, n, gmm["means"], gmm["stds"], gmm["weights"]), np.float64),
        reps,
    )
    truth, other = sample(k_truth), sample(k_floor)
    floor = np.array([sliced_w2(a, b, proj) for a, b in zip(truth, other)])
    head = dict(
        dim=dim,
        data_rms=s_d,
        n_per_chunk=n_chunk,
        chunks=reps,
        floor=dict(mean=floor.mean(), std=floor.std(ddof=1), per_chunk=floor.tolist()),
    )
    return head, dict(
        make_denoiser=make_denoiser, latents=latents, key=k_sampler, truth=truth, proj=proj
    )


def _run_variants(setup, fn, expected, variants, label, floor, **extra):
    """One compiled sampler, every denoiser variant: {variant: result row}."""
    run = jax.jit(
        lambda x, k, delta, center, make=setup["make_denoiser"]: fn(make(delta, center), x, k)
    )
    rows = {}
    for variant, (delta, center) in variants.items():
        t = time.time()
        samples, info = run(setup["latents"], setup["key"], jnp.float32(delta), jnp.float32(center))
        samples = np.asarray(samples)
        assert int(info["nfe"]) == expected
        if not np.all(np.isfinite(samples)):
            raise FloatingPointError(f"{label}: non-finite samples")
        sw = chunked_sw2(samples, setup["truth"], setup["proj"])
        rows[variant] = dict(
            nfe=int(info["nfe"]),
            **extra,
            sw2=sw.mean(),
            sw2_std=sw.std(ddof=1),
            per_chunk=sw.tolist(),
            seconds=time.time() - t,
        )
        log(
            f"{label} {variant:14s} NFE {int(info['nfe']):3d} ({extra['config']}): "
            f"SW2 {sw.mean():.4f} ({sw.mean() / floor:.2f}x floor)  {time.time() - t:.1f}s"
        )
    return rows


def run_gmm_problem(name, gmm, nfes, n_chunk, reps, results, seed=0):
    head, setup = _gmm_setup(gmm, n_chunk, reps, seed)
    floor = head["floor"]
    out = dict(**head, **{variant: {} for variant in VARIANTS})
    log(
        f"{name}: d={head['dim']}, s_d={head['data_rms']:.3f}, {reps}x{n_chunk} samples, "
        f"SW2 noise floor {floor['mean']:.4f} ± {floor['std']:.4f}"
    )
    for sampler in SAMPLER_NAMES:
        for nfe in nfes:
            try:
                fn, expected, desc = sampler_call(sampler, nfe)
            except ValueError as e:
                log(f"{name} {sampler} NFE {nfe}: skipped ({e})")
                continue
            rows = _run_variants(
                setup, fn, expected, VARIANTS, f"{name} {sampler:12s}", floor["mean"], config=desc
            )
            for variant, row in rows.items():
                out[variant].setdefault(sampler, []).append(row)
    results[name] = out


def run_cut_grid(main_steps, restarts, sizes, reps, results, families=CUT_FAMILIES, seed=0):
    """Restart on a cut main grid (N_main steps, K restarts) against heun and stochastic
    on the finer grid of the same NFE, on ring2d and gmm64 (see the module docstring)."""
    t0 = time.time()
    configs, nfes = cut_grid_configs(families, main_steps, restarts)
    out = dict(
        settings=dict(
            main_steps=list(main_steps),
            restarts=list(restarts),
            families={f: RESTART_FAMILIES[f] for f in families},
            variants=CUT_VARIANTS,
            chunks=reps,
            sizes={name: sizes[name] for name in ("ring2d", "gmm64")},
            churn=CHURN,
        ),
        problems={},
    )
    for name, gmm in (("ring2d", ring2d()), ("gmm64", gmm64())):
        head, setup = _gmm_setup(gmm, sizes[name], reps, seed)
        floor = head["floor"]["mean"]
        res = out["problems"][name] = dict(**head, **{v: {} for v in CUT_VARIANTS})
        log(
            f"cutgrid {name}: {reps}x{sizes[name]} samples, floor {floor:.4f}; "
            f"{len(configs)} restart configs, heun/stochastic at NFE {nfes}"
        )
        for fam, n_main, K, nfe in configs:
            fn, expected, desc = restart_call(fam, n_main, K)
            assert expected == nfe
            series = f"{fam} N_main={n_main}"
            rows = _run_variants(
                setup,
                fn,
                expected,
                CUT_VARIANTS,
                f"cutgrid {name} {series}",
                floor,
                config=desc,
                n_main=n_main,
                K=K,
            )
            for variant, row in rows.items():
                res[variant].setdefault(series, []).append(row)
        # K = 0 is Heun on the cut grid whatever the interval: run once, shared by the families.
        for variant in CUT_VARIANTS:
            for fam, n_main, K, _ in configs:
                if K == 0:
                    for other in families[1:]:
                        res[variant][f"{other} N_main={n_main}"].insert(
                            0, res[variant][f"{fam} N_main={n_main}"][0]
                        )
        for sampler in ("heun", "stochastic"):
            for nfe in nfes:
                fn, expected, desc = sampler_call(sampler, nfe)
                assert expected == nfe and desc == f"N={matched_steps(nfe)}"
                rows = _run_variants(
                    setup,
                    fn,
                    expected,
                    CUT_VARIANTS,
                    f"cutgrid {name} {sampler}",
                    floor,
                    config=desc,
                )
                for variant, row in rows.items():
                    res[variant].setdefault(sampler, []).append(row)
    out["seconds"] = time.time() - t0
    results["cutgrid"] = out


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
        choices=SECTIONS,
        action="append",
        help="run only these sections (repeatable); the others are kept from an existing "
        "samplers_cpu.json in --out-dir",
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
    problems = args.only or SECTIONS
    if args.quick:
        nfes, pfg_nfes, reps = [19, 63], [5, 19], 4
        sizes = dict(ring2d=2000, gmm64=1000, pfgmpp=250)
        cut = dict(main_steps=(6,), restarts=(0, 2), reps=4)
    else:
        nfes, pfg_nfes, reps = [19, 35, 63, 199], [5, 9, 19, 63], 8
        sizes = dict(ring2d=2500, gmm64=1000, pfgmpp=250)
        cut = dict(main_steps=CUT_MAIN_STEPS, restarts=CUT_RESTARTS, reps=16)
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
    if "cutgrid" in problems:
        run_cut_grid(cut["main_steps"], cut["restarts"], sizes, cut["reps"], results)

    suffix = "_quick" if args.quick else ""
    path = os.path.join(args.out_dir, f"samplers_cpu{suffix}.json")
    config = dict(
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
    )
    merged_from = None
    if os.path.exists(path):
        # Sections not rerun keep their earlier results (and, if no main problem was
        # rerun, the main settings they were run with).
        with open(path) as f:
            old = json.load(f)
        kept = {k: v for k, v in old["results"].items() if k not in results}
        if kept:
            log(f"keeping {sorted(kept)} from {path}")
            results = {**kept, **results}
            merged_from = dict(sections=sorted(kept), total_seconds=old.get("total_seconds"))
            if not any(p in problems for p in ("ring2d", "gmm64", "pfgmpp")):
                config = old["config"]
    results = _to_builtin(results)
    payload = dict(
        config=config,
        machine=dict(
            jax=jax.__version__,
            platform=jax.devices()[0].platform,
            cpu_count=os.cpu_count(),
            python=sys.version.split()[0],
            node=platform.machine(),
        ),
        total_seconds=time.time() - _T0,  # this run's; merged_from: the earlier run's
        results=results,
    )
    if merged_from:
        payload["merged_from"] = merged_from
    with open(path, "w") as f:
        json.dump(_to_builtin(payload), f, indent=1)
    print(write_report(results, args.out_dir, suffix))
    log(f"wrote {args.out_dir}/samplers_cpu{suffix}.json, PNGs and samplers_table{suffix}.md")


if __name__ == "__main__":
    main()
