"""Trained digits models: FD-digits vs NFE per sampler, FD vs training step, PFGM++ vs EDM.

  python -m train.diffusion --workdir=runs/diffusion_pfgmpp --config.checkpoint_keep_period=500
  python -m train.diffusion --workdir=runs/diffusion_edm \
      --config=train/configs/diffusion_digits.py:edm --config.checkpoint_keep_period=500
  python benchmarks/diffusion_digits.py --runs runs/diffusion_pfgmpp runs/diffusion_edm@500

Samples `--num_samples` images per latent seed (`--seeds`, the same latents for every
sampler, so differences between samplers are paired) from each run's EMA checkpoint (the
last one, or `dir@step`) with Heun, EDM-stochastic and Restart at several NFE (including the
official Restart repo's settings, `--settings`), scores each set with
`metrics.evaluate_digits` (FD against train with its floor at the same N, KID) and reports
mean ± s.e. over the seeds. `--weight_bits 0 6 4` also scores every setting with the weights
quantised to 6 and 4 bits (PFGM++'s robustness-to-model-error study). Writes
benchmarks/results/<out>_cpu.json (runs scored earlier are kept) and <out>_cpu.png.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ml_collections  # noqa: E402

from jaxml import parallel  # noqa: E402
from jaxml.diffusion import metrics, recipe  # noqa: E402
from jaxml.diffusion.image_grid import save_image_grid  # noqa: E402
from jaxml.training.checkpoint import Checkpointer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"

# (label, sampler, overrides of config.sampler)
STOCHASTIC = {"S_churn": 40.0, "S_min": 0.05, "S_max": 50.0, "S_noise": 1.003}
SETTINGS = [
    # N = 22 and 38 give NFE 43 and 75, the official Restart settings' NFE below.
    *[(f"heun N={n}", "heun", {"num_steps": n}) for n in (5, 10, 18, 22, 35, 38)],
    *[
        (f"stochastic N={n}", "stochastic", {"num_steps": n, **STOCHASTIC})
        for n in (5, 10, 18, 22, 35, 38)
    ],
    *[
        (
            f"restart N=10 K={k}",
            "restart",
            {"num_steps": 10, "restart_intervals": ((3, k, 0.06, 0.30),)},
        )
        for k in (1, 2)
    ],
    *[
        (
            f"restart N=18 K={k}",
            "restart",
            {"num_steps": 18, "restart_intervals": ((3, k, 0.06, 0.30),)},
        )
        for k in (1, 2, 5, 10)
    ],
    # The official repo's settings (Newbeeer/diffusion_restart_sampling, benchmarks/
    # params_cifar10_pfgmpp.txt and the README's ImageNet-64 EDM example): [N_R, K, t_min, t_max].
    (
        "restart official cifar10 (NFE 43)",
        "restart",
        {"num_steps": 18, "restart_intervals": ((3, 2, 0.14, 0.30),)},
    ),
    (
        "restart official imagenet (NFE 203)",
        "restart",
        {
            "num_steps": 36,
            "restart_intervals": (
                (4, 1, 19.35, 40.79),
                (4, 1, 1.09, 1.92),
                (4, 5, 0.59, 1.09),
                (4, 5, 0.30, 0.59),
                (6, 6, 0.06, 0.30),
            ),
        },
    ),
]


def quantize_weights(params, bits: int):
    """Post-training quantisation as in PFGM++'s robustness study: every weight tensor (ndim
    >= 2) rounded to a symmetric uniform grid of 2^(bits-1) - 1 levels per sign, scaled by
    its largest magnitude; biases and norm scales stay in float."""

    def one(w):
        if w.ndim < 2:
            return w
        step = jnp.max(jnp.abs(w)) / (2 ** (bits - 1) - 1)
        return jnp.where(step > 0, jnp.round(w / jnp.where(step > 0, step, 1.0)) * step, w)

    return jax.tree.map(one, params)


def parse_run(text: str) -> tuple[Path, int | None]:
    """'runs/x' (last checkpoint) or 'runs/x@500' (checkpoint 500)."""
    path, _, step = text.partition("@")
    return Path(path), int(step) if step else None


def mean_se(values) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se)


def evaluate_run(
    workdir: Path,
    step: int | None,
    num_samples: int,
    seeds: list[int],
    grid_out,
    settings,
    weight_bits=(0,),
):
    """Scores checkpoint `step` (None: the last) with each setting, for each weight precision
    in `weight_bits` (0: the float weights; b: quantize_weights(b))."""
    checkpointer = Checkpointer(workdir / "checkpoints", save_every=1)
    step = checkpointer.latest_step() if step is None else step
    if step not in checkpointer.all_steps():
        raise SystemExit(f"{workdir}: no checkpoint {step}; saved: {checkpointer.all_steps()}")
    config = ml_collections.ConfigDict(checkpointer.saved_config(step))
    mesh = parallel.make_mesh(config.mesh)
    network, ema_params = recipe.load_ema_params(checkpointer, step, config, mesh)
    checkpointer.close()
    rows = []
    size = config.data.image_size
    for label, sampler, overrides in settings:
        c = config.copy_and_resolve_references()
        with c.unlocked():
            c.sampler.name = sampler
            c.sampler.update(overrides)
        sample_fn = recipe.make_sample_fn(network, c)  # compiled once, reused for all weights
        for bits in weight_bits:
            params = ema_params if not bits else quantize_weights(ema_params, bits)
            start = time.perf_counter()

            def save_grid(seed, images, label=label, bits=bits):
                if grid_out and label == "restart N=18 K=2" and seed == seeds[0] and not bits:
                    save_image_grid(images[:100], grid_out, scale=4)

            evaluations = recipe.evaluate_digits_per_seed(
                sample_fn, params, c, seeds, num_samples, mesh, on_images=save_grid
            )
            nfe = sample_fn.nfe
            row = {"setting": label, "sampler": sampler, "nfe": nfe, "weight_bits": bits}
            for key in ("fd_train", "kid_train", "precision", "recall"):
                row[key], row[key + "_se"] = mean_se([e[key] for e in evaluations])
                row[key + "_per_seed"] = [float(e[key]) for e in evaluations]
            row["fd_train_floor"] = float(evaluations[0]["fd_train_floor"])
            row["seconds"] = time.perf_counter() - start
            rows.append(row)
            weights = f"{bits}-bit" if bits else "float"
            print(
                f"{workdir.name}@{step}: {label:36s} {weights:6s} NFE {nfe:3d}  "
                f"FD {row['fd_train']:7.3f} ± {row['fd_train_se']:.3f} "
                f"(floor {row['fd_train_floor']:.3f})  "
                f"KID×10³ {1e3 * row['kid_train']:.2f} ± {1e3 * row['kid_train_se']:.2f}",
                flush=True,
            )
    history = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    num_eval = config.eval.num_samples  # the training eval's N (its own floor differs)
    fd_vs_step = [
        {"step": r["step"], "fd_digits": r["eval/fd_digits"], "N": num_eval}
        for r in history
        if "eval/fd_digits" in r
    ]
    return {
        "workdir": str(workdir),
        "step": step,
        "D": config.diffusion.D,
        "train_steps": config.total_steps,
        "batch_size": config.data.batch_size,
        "image_size": size,
        "samplers": rows,
        "fd_vs_training_step": fd_vs_step,
    }


def merge_runs(previous: list[dict], new: list[dict]) -> list[dict]:
    """Runs scored earlier are kept; a checkpoint scored again keeps its earlier rows except
    those of the same (setting, weight bits), which the new scores replace."""
    merged = {(r["workdir"], r["step"]): r for r in previous}
    for run in new:
        key = (run["workdir"], run["step"])
        if key in merged:
            fresh = {(r["setting"], r.get("weight_bits", 0)) for r in run["samplers"]}
            old_rows = [
                r
                for r in merged[key]["samplers"]
                if (r["setting"], r.get("weight_bits", 0)) not in fresh
            ]
            run = {**run, "samplers": old_rows + run["samplers"]}
        merged[key] = run
    return list(merged.values())


def run_label(run: dict) -> str:
    d = "∞ (EDM)" if run["D"] is None else run["D"]
    return f"D={d} step {run['step']}"


def plot(results: dict, path: Path) -> None:
    """FD vs NFE per run and sampler (float weights); beside it FD vs weight bits where
    quantised weights were scored, else the training evals' FD vs step."""
    quantised = any(r.get("weight_bits") for run in results["runs"] for r in run["samplers"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in results["runs"]:
        rows = [r for r in run["samplers"] if not r.get("weight_bits")]
        for sampler, marker in (("heun", "o"), ("stochastic", "s"), ("restart", "^")):
            pts = sorted(
                (r["nfe"], r["fd_train"], r["fd_train_se"]) for r in rows if r["sampler"] == sampler
            )
            if pts:
                x, y, err = zip(*pts)
                axes[0].errorbar(
                    x, y, yerr=err, marker=marker, capsize=2, label=f"{run_label(run)} {sampler}"
                )
        if quantised:
            for setting in dict.fromkeys(r["setting"] for r in run["samplers"]):
                pts = sorted(
                    (r.get("weight_bits") or 32, r["fd_train"], r["fd_train_se"])
                    for r in run["samplers"]
                    if r["setting"] == setting
                )
                if len(pts) > 1:
                    x, y, err = zip(*pts)
                    axes[1].errorbar(
                        x, y, yerr=err, marker="o", capsize=2, label=f"{run_label(run)} {setting}"
                    )
        else:
            steps = [(r["step"], r["fd_digits"]) for r in run["fd_vs_training_step"]]
            axes[1].plot(*zip(*steps), marker="o", label=f"{run_label(run)} (Restart, EMA)")
    floor = results["runs"][-1]["samplers"][0]["fd_train_floor"]
    n, seeds = results["num_samples"], len(results["seeds"])
    for ax in axes:
        ax.axhline(floor, color="gray", ls="--", label=f"real digits, N={n}")
        ax.set_yscale("log")
        ax.legend(fontsize=6)
    axes[0].set(
        xlabel="NFE",
        ylabel=f"FD-digits (N={n}, mean ± s.e., {seeds} seeds)",
        title="FD-digits vs NFE (EMA weights)",
    )
    if quantised:
        axes[1].set(
            xscale="log",
            xlabel="weight bits (32: float)",
            ylabel="FD-digits",
            title="robustness to post-training weight quantisation",
        )
    else:
        axes[1].set(
            xlabel="training step", ylabel="FD-digits (training eval's N)", title="training evals"
        )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--runs", nargs="+", required=True, help="workdirs; 'dir@500' scores checkpoint 500"
    )
    parser.add_argument("--num_samples", type=int, default=2048, help="images per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--settings",
        nargs="+",
        default=[label for label, _, _ in SETTINGS],
        help="labels of SETTINGS to run, e.g. 'heun N=18' 'restart N=18 K=2' (default: all)",
    )
    parser.add_argument(
        "--weight_bits",
        type=int,
        nargs="+",
        default=[0],
        help="score each setting with the float weights (0) and/or weights quantised to b bits",
    )
    parser.add_argument(
        "--out", default="diffusion_digits", help="results name: benchmarks/results/<out>_cpu.*"
    )
    args = parser.parse_args()

    known = {label: (label, sampler, o) for label, sampler, o in SETTINGS}
    unknown = [label for label in args.settings if label not in known]
    if unknown:
        parser.error(f"unknown --settings {unknown}; choose from {list(known)}")
    if any(b < 0 or b == 1 or b > 16 for b in args.weight_bits):
        parser.error(f"--weight_bits: 0 (float) or 2..16, got {args.weight_bits}")
    runs = [parse_run(text) for text in args.runs]
    missing = [str(w) for w, _ in runs if not (w / "checkpoints").is_dir()]
    if missing:
        parser.error(f"no checkpoints/ in {missing}")
    settings = [known[label] for label in args.settings]
    reference = metrics.digits_reference_numbers()
    out = RESULTS / f"{args.out}_{jax.default_backend()}.json"
    previous = json.loads(out.read_text())["runs"] if out.exists() else []
    # Runs scored before the multi-seed evaluation (one FD-digits per setting) are dropped.
    previous = [r for r in previous if all("fd_train" in row for row in r["samplers"])]
    results = {
        "benchmark": "benchmarks/diffusion_digits.py",
        "num_samples": args.num_samples,
        "seeds": args.seeds,
        "command": "python benchmarks/diffusion_digits.py " + " ".join(sys.argv[1:]),
        "device": {"backend": jax.default_backend(), "devices": jax.device_count()},
        "reference": reference,
        "runs": [],
    }
    for workdir, step in runs:
        results["runs"].append(
            evaluate_run(
                workdir,
                step,
                args.num_samples,
                args.seeds,
                RESULTS / f"{args.out}_{workdir.name}_samples.png",
                settings,
                args.weight_bits,
            )
        )
        # Written after each run so that an interrupted sweep keeps what it scored.
        merged = merge_runs(previous, results["runs"])
        out.write_text(json.dumps({**results, "runs": merged}, indent=2))
    results["runs"] = merged
    plot(results, out.with_suffix(".png"))
    print(json.dumps(reference))


if __name__ == "__main__":
    main()
